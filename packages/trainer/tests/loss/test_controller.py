"""BalancingController in a tiny training loop: CoBa resume continues with the same weights, early stopping,
plots, summary, and the loss config it is built from."""

from __future__ import annotations

import math

import pytest
import torch
from loss_testkit import TinyLM, make_rows, split_rows, train_steps
from mft_trainer.config.loss import LossConfig
from mft_trainer.loss.controller import BalancingController
from mft_trainer.plots import smooth
from pydantic import ValidationError

TASKS = ["code", "docs", "tests"]


def valid_batches():
    batch = make_rows(num_rows=12, seed=77)
    return [split_rows(batch, [i, i + 1]) for i in range(0, 12, 2)]


def build(cfg: LossConfig, seed: int = 0, validate_every: int = 5):
    model = TinyLM(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    ctl = BalancingController(
        cfg, TASKS, token_losses=model.token_losses, valid_batches=valid_batches(), model=model,
        validate_every=validate_every,
    )
    return model, opt, ctl


COBA = {
    "mode": "coba",
    "task_weights": {"docs": 2.0},
    "coba": {"warmup": 4, "history": 5, "update_every": 2},
    "validation": {"slice": "separate", "slice_size": 2},
    "early_stopping": {"metric": "total", "patience": 50},
}


FAMO = {
    "mode": "famo",
    "famo": {"lr": 0.1, "update_every": 2},
    "validation": {"slice": "separate", "slice_size": 2},
    "early_stopping": {"metric": "total", "patience": 50},
}


def resumed_equals_uninterrupted(cfg: LossConfig, tmp_path) -> tuple[list, BalancingController]:
    """30 steps in one go against 15 + a resume from a checkpoint + 15: the uninterrupted reports, resumed controller."""
    model, opt, ctl = build(cfg)
    ctl.on_train_begin(0)
    full: list = []
    train_steps(ctl, model, opt, range(1, 31), full)

    model, opt, ctl = build(cfg)
    ctl.on_train_begin(0)
    first: list = []
    train_steps(ctl, model, opt, range(1, 16), first)
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "balance": ctl.state_dict()},
        tmp_path / "ck.pt",
    )

    state = torch.load(tmp_path / "ck.pt", weights_only=False)
    model, opt, ctl = build(cfg, seed=5)  # different init: everything must come from the checkpoint
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    ctl.load_state_dict(state["balance"])
    second: list = []
    train_steps(ctl, model, opt, range(16, 31), second)

    def numbers(report):  # everything but wall-clock timings must be bit-identical
        return {k: v for k, v in report.metrics.items() if k != "balancer_seconds"}

    for a, b in zip(full[15:], second, strict=True):
        assert numbers(a) == numbers(b), a.step
    return full, ctl


def test_coba_resume_continues_with_the_same_weights(tmp_path):
    full, ctl = resumed_equals_uninterrupted(LossConfig.model_validate(COBA), tmp_path)
    weights = [r.metrics["weight/code"] for r in full]
    assert (
        len(set(weights[:4])) == 1 and len(set(weights[6:])) > 1
    )  # uniform in warm-up, then CoBa moves them
    assert ctl.slice.calls == 16 and ctl.slice.seconds > 0  # step 0 + 15 updates (every 2 steps of 30)


def test_famo_weights_move_resume_exactly_and_train_on_the_log_losses(tmp_path):
    full, ctl = resumed_equals_uninterrupted(LossConfig.model_validate(FAMO), tmp_path)
    assert ctl.step_loss.mode == "famo" and ctl.step_loss.needs_probe
    weights = [[r.metrics[f"weight/{t}"] for t in TASKS] for r in full]
    assert weights[0] == pytest.approx([1 / 3] * 3)  # one slice point at step 0: nothing to compare yet
    assert max(abs(w - 1 / 3) for w in weights[-1]) > 0.02 and sum(weights[-1]) == pytest.approx(1.0)
    assert len({tuple(w) for w in weights[1::2]}) == 15  # a new weight vector after every update (every 2 steps)
    assert ctl.slice.calls == 16
    assert all(math.isfinite(r.metrics["loss"]) for r in full)


def test_early_stopping_plots_and_summary(tmp_path):
    cfg = LossConfig.model_validate(
        {
            "mode": "task",
            "early_stopping": {"metric": "docs", "patience": 2},
        }
    )
    model, _, ctl = build(cfg, validate_every=1)
    opt = torch.optim.SGD(model.parameters(), lr=40.0)  # far too high: validation loss soon stops improving
    reports: list = []
    for step in range(1, 40):
        train_steps(ctl, model, opt, [step], reports)
        if reports[-1].should_stop:
            break
    assert reports[-1].should_stop and reports[-1].step < 39
    best = ctl.early_stopping.best_step
    assert [r.step for r in reports if r.is_best][-1] == best
    ctl.on_train_end(reports[-1].step, tmp_path)
    for name in ("valid_loss_per_task.png", "task_weights.png", "training_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["step"] for r in ctl.train_records] == [r.step for r in reports]
    assert set(ctl.train_records[0]["train"]) <= set(TASKS) and set(ctl.train_records[0]["weights"]) == set(TASKS)
    rows = ctl.summary_rows()
    assert [r["task"] for r in rows] == TASKS
    assert all(r["tokens_seen"] > 0 and r["best_step"] is not None for r in rows)
    assert ctl.summary_table().row_count == 3


def test_token_mode_logs_each_tasks_share_of_the_loss(tmp_path):
    """In token mode no task weights act: the log and plots show each task's token share of the step instead."""
    model, opt, ctl = build(LossConfig.model_validate({"mode": "token"}))
    assert not ctl.weights_act
    reports: list = []
    for step in range(1, 7):
        before = ctl.tokens_seen.clone()
        train_steps(ctl, model, opt, [step], reports)
        tokens = (ctl.tokens_seen - before).double()  # this step's supervised tokens per task
        shares = [reports[-1].metrics[f"share/{t}"] for t in TASKS]
        assert shares == pytest.approx((tokens / tokens.sum()).tolist())
        assert ctl.train_records[-1]["share"] == dict(zip(TASKS, shares, strict=True))
        assert len({round(v, 6) for v in shares}) > 1  # the tasks' token counts differ: not the uniform 1/3
    ctl.on_train_end(reports[-1].step, tmp_path)
    for name in ("task_weights.png", "training_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    _, _, task_ctl = build(LossConfig.model_validate({"mode": "task"}))
    assert task_ctl.weights_act


def test_loss_config_validation_names_the_key():
    with pytest.raises(ValidationError, match="loss.alpha / loss.gamma"):
        LossConfig.model_validate({"mode": "task", "gamma": 2.0})
    with pytest.raises(ValidationError, match="extra"):
        LossConfig.model_validate({"mode": "task", "coba": {"warmpu": 3}})
    with pytest.raises(ValidationError, match="loss.task_weights"):
        LossConfig.model_validate({"mode": "token", "task_weights": {"a": 1.0}})
    cfg = LossConfig.model_validate({"task_weights": {"nope": 1.0}})
    with pytest.raises(ValueError, match="unknown task"):
        cfg.check_tasks(TASKS)
    with pytest.raises(ValueError, match="early_stopping.metric"):
        LossConfig.model_validate({"early_stopping": {"metric": "bleu"}}).check_tasks(TASKS)
    assert LossConfig().resolved_mode(3) == "task" and LossConfig().resolved_mode(1) == "token"
    assert LossConfig(mode="coba").combine_mode(3) == "task"
    assert LossConfig(mode="famo").combine_mode(3) == "famo"
    with pytest.raises(ValidationError, match="extra"):
        LossConfig.model_validate({"mode": "famo", "famo": {"betas": [0.9, 0.99]}})
    w = LossConfig.model_validate({"task_weights": {"docs": 3.0}}).task_weight_vector(TASKS)
    assert w.tolist() == [1.0, 3.0, 1.0]


def test_smooth_is_a_trailing_mean_that_skips_absent_steps():
    nan = float("nan")
    got = smooth([1.0, 3.0, nan, 5.0, 7.0], window=2)
    assert got[:2] == [1.0, 2.0] and math.isnan(got[2]) and got[3:] == [4.0, 6.0]
    assert smooth([2.0, 4.0], window=1) == [2.0, 4.0]
    with pytest.raises(ValueError, match="window"):
        smooth([1.0], window=0)
