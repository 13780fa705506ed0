"""The ``loss:`` section of the trainer config (pydantic): loss mode, task weights, balancers, validation, early stop.

Validated before any model is loaded; task names are checked against the dataset's tasks by
:meth:`LossConfig.check_tasks` once the prepared dataset is opened (errors name the key and the known tasks).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from mft_trainer.config.base import Section, reject_other_spellings
from mft_trainer.loss.modes import BALANCED_MODES, FOCAL_MODES, LOSS_MODES, WEIGHTED_MODES

LossMode = Literal[LOSS_MODES]  # type: ignore[valid-type]  # the one list, in loss/modes.py


class CoBaSettings(Section):
    """CoBa (paper defaults): warm-up steps of uniform weights, slope window, DF temperature, update cadence."""

    warmup: int = Field(100, ge=0, description="optimizer steps of uniform weights before CoBa acts")
    history: int = Field(200, ge=2, description="validation points in the slope window (N)")
    tau: float = Field(5.0, gt=0, description="divergence-factor temperature")
    valid_batches: int | None = Field(
        None,
        ge=1,
        description="micro-batches of the cached balancer slice per update, cycling; None = all of it",
    )
    update_every: int = Field(1, ge=1, description="optimizer steps between weight updates")


class SelfPacedSettings(Section):
    """MFTCoder v0.3 self-paced weights."""

    history: int = Field(100, ge=2, description="validation points in the slope window (H)")
    scale: float = Field(50.0, gt=0, description="sharpness of the final softmax")
    update_every: int = Field(1, ge=1, description="optimizer steps between weight updates")


class FamoSettings(Section):
    """FAMO (paper Eq. 4): Adam on the task logits, as FAMO's released code (its defaults)."""

    lr: float = Field(0.025, gt=0, description="Adam learning rate of the task logits xi")
    weight_decay: float = Field(0.001, ge=0, description="L2 decay of xi (pulls the weights back to uniform)")
    update_every: int = Field(1, ge=1, description="optimizer steps between weight updates")


class ValidationSettings(Section):
    """Per-task validation over the whole validation split, and the balancers' held-out slice.

    How often validation runs is the top-level `eval_every`.
    """

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        return reject_other_spellings(data, "loss.validation", {"every": "eval_every"})
    slice: Literal["separate", "valid"] = Field(
        "separate",
        description="separate: the balancer slice is removed from the early-stopping validation set; "
        "valid: the balancer reads a cached subset of the validation set itself",
    )
    slice_size: int = Field(16, ge=1, description="samples per task in the balancer slice (per rank)")


class EarlyStoppingSettings(Section):
    """Stop when the metric has not improved for ``patience`` validations (None: never stop, still track best)."""

    metric: str = Field("total", description="total (token mean), task_mean, or a task name")
    patience: int | None = Field(None, ge=1)
    min_delta: float = Field(0.0, ge=0)


class LossConfig(Section):
    """``loss:``: how the per-token losses of one optimizer step are combined, and how task weights evolve."""

    mode: LossMode = Field("auto", description="auto = task for multi-task data, token for a single task")
    task_weights: dict[str, float] | None = Field(None, description="static weight per task name (default 1)")
    alpha: dict[str, float] | None = Field(None, description="focal alpha per task name (default 1)")
    gamma: float = Field(0.0, ge=0, description="focal exponent")
    coba: CoBaSettings = Field(default_factory=CoBaSettings)
    self_paced: SelfPacedSettings = Field(default_factory=SelfPacedSettings)
    famo: FamoSettings = Field(default_factory=FamoSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    early_stopping: EarlyStoppingSettings = Field(default_factory=EarlyStoppingSettings)

    @model_validator(mode="after")
    def _combinations(self) -> LossConfig:
        if self.task_weights is not None and self.mode not in (*WEIGHTED_MODES, "auto"):
            raise ValueError(
                f"loss.task_weights: mode {self.mode!r} ignores task weights; use one of {WEIGHTED_MODES}"
            )
        if (self.alpha is not None or self.gamma != 0.0) and self.mode not in FOCAL_MODES:
            raise ValueError(
                f"loss.alpha / loss.gamma act only in the focal modes {FOCAL_MODES}, not {self.mode!r}"
            )
        for key, mapping in (("task_weights", self.task_weights), ("alpha", self.alpha)):
            for name, value in (mapping or {}).items():
                if not value >= 0:
                    raise ValueError(f"loss.{key}.{name}: must be >= 0, got {value}")
        return self

    # ---- resolution against the dataset's tasks --------------------------------------------------------------------
    def resolved_mode(self, num_tasks: int) -> str:
        """The configured mode with ``auto`` resolved: ``task`` for several tasks, ``token`` for one."""
        if self.mode == "auto":
            return "task" if num_tasks > 1 else "token"
        return self.mode

    def combine_mode(self, num_tasks: int) -> str:
        """The :func:`mft_trainer.loss.multitask.multitask_loss` mode: balancers combine task-balanced (``task``)."""
        mode = self.resolved_mode(num_tasks)
        return "task" if mode in BALANCED_MODES else mode

    def check_tasks(self, task_names: list[str]) -> None:
        """Fail, naming the key, when a task weight/alpha/metric names a task the dataset does not have."""
        known = set(task_names)
        for key, mapping in (("task_weights", self.task_weights), ("alpha", self.alpha)):
            unknown = sorted(set(mapping or {}) - known)
            if unknown:
                raise ValueError(
                    f"loss.{key}: unknown task(s) {unknown}; the dataset's tasks are {sorted(known)}"
                )
        metric = self.early_stopping.metric
        if metric not in ("total", "task_mean") and metric not in known:
            raise ValueError(
                f"loss.early_stopping.metric: {metric!r} is not 'total', 'task_mean' or a task ({sorted(known)})"
            )
        if self.task_weights is not None and self.resolved_mode(len(task_names)) in ("token", "sample"):
            raise ValueError(
                "loss.task_weights: a single-task dataset (mode token) has no task weights to apply"
            )

    def task_weight_vector(self, task_names: list[str]) -> torch.Tensor | None:
        """Static weights as a tensor indexed by task id (None when not configured)."""
        if self.task_weights is None:
            return None
        self.check_tasks(task_names)
        return torch.tensor([float(self.task_weights.get(n, 1.0)) for n in task_names], dtype=torch.float64)

    def alpha_vector(self, task_names: list[str]) -> torch.Tensor | None:
        if self.alpha is None:
            return None
        self.check_tasks(task_names)
        return torch.tensor([float(self.alpha.get(n, 1.0)) for n in task_names], dtype=torch.float64)
