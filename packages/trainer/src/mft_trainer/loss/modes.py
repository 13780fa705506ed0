"""The loss modes, in one place: how one optimizer step's per-token losses are combined into its loss.

`COMBINE_MODES` are the pure combinations (`multitask.multitask_loss`, `step.StepLoss`); the balanced modes
combine as `task` with weights a balancer sets from validation-loss curves (`balancers.py`); `famo` is both: its own
combination (the weighted log task losses, paper Eq. 4) with weights `FamoBalancer` sets from the drop of the log
validation losses; `auto` is `task` for multi-task data and `token` for a single task. Formulas: docs/reference.md §3.
"""

from __future__ import annotations

COMBINE_MODES: tuple[str, ...] = (
    "token", "sample", "task", "task_sample", "focal_sample", "focal_task", "famo"
)
BALANCED_MODES: tuple[str, ...] = ("self_paced", "coba")
LOSS_MODES: tuple[str, ...] = ("auto", *COMBINE_MODES, *BALANCED_MODES)

TASK_MODES: tuple[str, ...] = ("task", "task_sample", "focal_sample", "focal_task", "famo")  # weighted per task
SAMPLE_MODES: tuple[str, ...] = ("sample", "task_sample", "focal_sample", "focal_task")  # per-sample token means
FOCAL_MODES: tuple[str, ...] = ("focal_sample", "focal_task")  # take alpha and gamma
PROBE_MODES: tuple[str, ...] = ("focal_task", "famo")  # not linear in the tokens: a no-grad probe pass first
WEIGHTED_MODES: tuple[str, ...] = (*TASK_MODES, *BALANCED_MODES)  # accept loss.task_weights


def check_combine_mode(mode: str) -> None:
    if mode not in COMBINE_MODES:
        raise ValueError(f"loss mode {mode!r} is not one of {', '.join(COMBINE_MODES)}")
