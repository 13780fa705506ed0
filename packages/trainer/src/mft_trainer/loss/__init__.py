"""Multi-task losses: the pure combination (`multitask.py`), its micro-batch form (`step.py`), the balancers that set
task weights from validation curves, per-task validation, early stopping, and the controller the loop talks to."""
