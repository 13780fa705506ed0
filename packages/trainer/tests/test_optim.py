"""LR schedule golden values (hand-computed) and the once-per-optimizer-step wiring through LambdaLR."""

from __future__ import annotations

import math

import pytest
import torch
from mft_trainer.optim import build_scheduler, lr_at

KW = {"base_lr": 1.0, "total_steps": 10, "warmup_steps": 2, "min_lr": 0.1}


@pytest.mark.parametrize(
    ("kind", "step", "expected"),
    [
        ("cosine", 0, 0.5),  # warm-up: (0 + 1) / 2
        ("cosine", 1, 1.0),
        ("cosine", 2, 1.0),  # decay starts at progress 0
        ("cosine", 6, 0.55),  # progress 4/8: 0.1 + 0.9 * 0.5
        ("cosine", 9, 0.1 + 0.9 * (1 + math.cos(math.pi * 7 / 8)) / 2),  # 0.1342542...
        ("cosine", 10, 0.1),
        ("cosine", 25, 0.1),  # past the end: clipped at min_lr
        ("linear", 0, 0.5),
        ("linear", 6, 0.55),
        ("linear", 9, 0.2125),  # 0.1 + 0.9 * 1/8
        ("constant", 7, 1.0),
    ],
)
def test_golden_values(kind: str, step: int, expected: float) -> None:
    assert lr_at(step, kind=kind, **KW) == pytest.approx(expected, abs=1e-12)


def test_cosine_literal_value() -> None:
    assert lr_at(9, kind="cosine", **KW) == pytest.approx(0.13425421, abs=1e-8)


def test_no_warmup_starts_at_base_lr_and_never_zero_on_first_step() -> None:
    assert lr_at(0, base_lr=3e-4, total_steps=100, kind="cosine") == pytest.approx(3e-4)
    assert lr_at(0, base_lr=3e-4, total_steps=100, warmup_steps=10, kind="linear") == pytest.approx(3e-5)


def test_negative_step_rejected() -> None:
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, kind="cosine", **KW)


def test_lambdalr_follows_lr_at_once_per_optimizer_step() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = build_scheduler(opt, kind="cosine", **KW)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, kind="cosine", **KW) for s in range(10)], abs=1e-12)
    # the scheduler state round-trips (resume)
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched2 = build_scheduler(opt2, kind="cosine", **KW)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
