"""The optimizer (AdamW over the trainable parameters) and the learning-rate schedule, defined in OPTIMIZER steps.

MFTCoder computed its schedule in micro-steps and per-process steps, so under DeepSpeed/FSDP the warm-up lasted
(world_size x grad_accum) times too long (docs/reference.md §5). Here the schedule is a pure function of the optimizer
step, and the loop steps the scheduler exactly once per optimizer step on every backend.

    lr(s) = base_lr * (s + 1) / warmup_steps                       for s < warmup_steps
    lr(s) = min_lr + (base_lr - min_lr) * decay(p),  p = (s - warmup_steps) / (total_steps - warmup_steps)
    decay(p) = 1 - p                 (linear)
    decay(p) = (1 + cos(pi * p)) / 2 (cosine)

`s` is the index of the optimizer step about to be taken (0 for the first), so the first update never uses lr 0
and the last (s = total_steps - 1) is just above min_lr; p is clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from mft_trainer.config import TrainConfig

ScheduleKind = Literal["linear", "cosine", "constant"]


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    kind: ScheduleKind = "cosine",
) -> float:
    """Learning rate used by optimizer step `step` (0-based)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)
    if kind == "linear":
        decay = 1.0 - progress
    elif kind == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule kind {kind!r}; expected linear, cosine or constant")
    return min_lr + (base_lr - min_lr) * decay


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    kind: ScheduleKind = "cosine",
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose factor is lr_at(step)/base_lr; the optimizer's lr must be base_lr.

    LambdaLR applies factor(0) at construction, so the first optimizer step already uses lr_at(0), and each
    scheduler.step() after an optimizer step moves to the next optimizer step's rate.
    """
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")

    def factor(step: int) -> float:
        return lr_at(
            step, base_lr=base_lr, total_steps=total_steps, warmup_steps=warmup_steps, min_lr=min_lr, kind=kind
        ) / base_lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("the model has no trainable parameters (check peft.method and peft.target_modules)")
    opt = cfg.optimizer
    # foreach=False: the same kernel on every backend, so 1-process and sharded runs are comparable bit for bit.
    return torch.optim.AdamW(
        params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay, foreach=False
    )


def scheduler_for(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    sch = cfg.schedule
    return build_scheduler(
        optimizer, base_lr=cfg.optimizer.lr, total_steps=cfg.max_steps, warmup_steps=sch.warmup_steps,
        min_lr=sch.min_lr, kind=sch.kind,
    )
