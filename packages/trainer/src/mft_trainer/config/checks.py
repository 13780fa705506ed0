"""Cross-field checks of the whole `TrainConfig`, in one place (each field's own range is checked on its section)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mft_trainer.config.train import TrainConfig


def check_train_config(cfg: TrainConfig) -> None:
    """Raise ValueError, naming the keys, for combinations no run can honour."""
    if cfg.schedule.warmup_steps > cfg.max_steps:
        raise ValueError(
            f"schedule.warmup_steps ({cfg.schedule.warmup_steps}) must be <= max_steps ({cfg.max_steps}): the "
            f"warm-up would never finish; set schedule.warmup_steps={cfg.max_steps} or lower, or raise max_steps"
        )
    if cfg.schedule.min_lr > cfg.optimizer.lr:
        raise ValueError(f"schedule.min_lr ({cfg.schedule.min_lr}) must be <= optimizer.lr ({cfg.optimizer.lr})")
    if cfg.loss.early_stopping.patience is not None and cfg.eval_every == 0:
        raise ValueError(
            "loss.early_stopping.patience is set but eval_every is 0 (validation only at the end), so early "
            "stopping could never act; set eval_every to the steps between validations"
        )
    if cfg.distributed.deepspeed_config is not None and cfg.distributed.backend != "deepspeed":
        raise ValueError("distributed.deepspeed_config is set but distributed.backend is not 'deepspeed'")
