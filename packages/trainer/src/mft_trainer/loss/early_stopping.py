"""Early stopping on a validation metric: patience counted in validations, best step tracked, resumable."""

from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    """Track the best (lowest) value of a validation metric and say when to stop.

    ``update(step, value)`` returns True when ``value`` improves on the best by more than ``min_delta``; after
    ``patience`` consecutive validations without improvement ``should_stop`` becomes True (never, with patience
    None: the best step is still tracked so the best checkpoint can be kept). A NaN value never improves.
    """

    def __init__(self, patience: int | None = None, min_delta: float = 0.0) -> None:
        if patience is not None and patience < 1:
            raise ValueError(f"early stopping patience must be >= 1 or None, got {patience}")
        if min_delta < 0:
            raise ValueError(f"early stopping min_delta must be >= 0, got {min_delta}")
        self.patience = patience
        self.min_delta = min_delta
        self.best_value = math.inf
        self.best_step: int | None = None
        self.bad_evaluations = 0
        self.history: list[tuple[int, float]] = []

    def update(self, step: int, value: float) -> bool:
        """Record the metric measured at ``step``; True when it is a new best."""
        self.history.append((int(step), float(value)))
        if not math.isnan(value) and value < self.best_value - self.min_delta:
            self.best_value = float(value)
            self.best_step = int(step)
            self.bad_evaluations = 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evaluations >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "bad_evaluations": self.bad_evaluations,
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience = state["patience"]
        self.min_delta = float(state["min_delta"])
        self.best_value = float(state["best_value"])
        self.best_step = state["best_step"]
        self.bad_evaluations = int(state["bad_evaluations"])
        self.history = [(int(s), float(v)) for s, v in state["history"]]
