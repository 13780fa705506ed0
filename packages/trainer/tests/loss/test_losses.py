"""Multi-task losses: golden values per mode and exact micro-batch/accumulation invariance of loss and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from loss_testkit import (
    MODE_KWARGS,
    TinyLM,
    duplicate_first_row,
    flat,
    make_rows,
    run_step,
    split_rows,
    two_rank_results,
)
from mft_trainer.loss.modes import COMBINE_MODES
from mft_trainer.loss.multitask import multitask_loss
from mft_trainer.loss.step import StepLoss

# Three samples: A (task 0) losses [1, 3]; B (task 0) [5]; C (task 1) [4, 6, 8]; one unsupervised padding token.
L = torch.tensor([1.0, 3.0, 5.0, 4.0, 6.0, 8.0, 0.0], dtype=torch.float64)
MASK = torch.tensor([1, 1, 1, 1, 1, 1, 0])
TASKS = torch.tensor([0, 0, 0, 1, 1, 1, -1])
SAMPLES = torch.tensor([7, 7, 9, 4, 4, 4, -1])


def golden(mode: str, **kw) -> float:
    loss, _ = multitask_loss(L, MASK, TASKS, SAMPLES, mode, 3, **kw)
    return float(loss)


def test_golden_values_linear_modes():
    assert golden("token") == pytest.approx(27 / 6)
    assert golden("sample") == pytest.approx((2 + 5 + 6) / 3)
    assert golden("task") == pytest.approx((3 + 6) / 2)
    # task 2 is absent: its weight 5 must not enter the denominator.
    assert golden("task", task_weights=[1.0, 3.0, 5.0]) == pytest.approx((1 * 3 + 3 * 6) / 4)
    assert golden("task_sample") == pytest.approx((3.5 + 6) / 2)
    assert golden("task_sample", task_weights=[1.0, 3.0, 5.0]) == pytest.approx((3.5 + 3 * 6) / 4)
    assert golden("focal_sample", alpha=[2.0, 1.0, 1.0]) == pytest.approx((2 * 3.5 + 6) / 2)


def test_golden_focal_sample_eq2():
    gamma = 2.0
    alpha = [0.5, 2.0, 1.0]

    def f(loss, a):
        return -a * (1 - math.exp(-loss)) ** gamma * math.log(math.exp(-loss))

    task0 = ((f(1, 0.5) + f(3, 0.5)) / 2 + f(5, 0.5)) / 2
    task1 = (f(4, 2.0) + f(6, 2.0) + f(8, 2.0)) / 3
    assert golden("focal_sample", alpha=alpha, gamma=gamma) == pytest.approx((task0 + task1) / 2)


def test_golden_focal_task_eq3():
    gamma = 1.5
    alpha = [0.5, 2.0, 1.0]
    p = math.exp
    p0 = ((p(-1) + p(-3)) / 2 + p(-5)) / 2
    p1 = (p(-4) + p(-6) + p(-8)) / 3
    expected = (-0.5 * (1 - p0) ** gamma * math.log(p0) - 2.0 * (1 - p1) ** gamma * math.log(p1)) / 2
    assert golden("focal_task", alpha=alpha, gamma=gamma) == pytest.approx(expected)
    expected_w = (
        -0.5 * (1 - p0) ** gamma * math.log(p0) * 1 - 2.0 * (1 - p1) ** gamma * math.log(p1) * 3
    ) / 4
    assert golden("focal_task", alpha=alpha, gamma=gamma, task_weights=[1, 3, 9]) == pytest.approx(expected_w)


def test_golden_famo_eq4():
    # task means L0 = 3, L1 = 6 (task 2 absent); z normalised over the tasks present; c = 1 / sum z_k / L_k.
    assert golden("famo") == pytest.approx((0.5 * math.log(3) + 0.5 * math.log(6)) / (0.5 / 3 + 0.5 / 6))
    z0, z1 = 1 / 4, 3 / 4  # weights [1, 3, 9]: task 2's 9 does not enter
    c = 1 / (z0 / 3 + z1 / 6)
    assert golden("famo", task_weights=[1, 3, 9]) == pytest.approx(c * (z0 * math.log(3) + z1 * math.log(6)))


def test_famo_gradient_is_the_convex_combination_of_task_gradients():
    # FAMO's update direction: sum_k (c z_k / L_k) grad L_k, weights summing to 1 (no 1/L blow-up in scale).
    losses = L.clone().requires_grad_(True)
    loss, _ = multitask_loss(losses, MASK, TASKS, SAMPLES, "famo", 3, task_weights=[1, 3, 9])
    loss.backward()
    z0, z1 = 1 / 4, 3 / 4
    c = 1 / (z0 / 3 + z1 / 6)
    g0, g1 = c * z0 / 3, c * z1 / 6
    assert g0 + g1 == pytest.approx(1.0)
    expected = [g0 / 3] * 3 + [g1 / 3] * 3 + [0.0]  # d L_k / d l_t = 1 / n_k, n_0 = n_1 = 3
    torch.testing.assert_close(losses.grad, torch.tensor(expected, dtype=torch.float64))
    result, _ = run_step(TinyLM(), [make_rows(num_rows=2, seed=4)], "famo")
    assert float(result.task_weights.sum()) == pytest.approx(1.0)  # the applied g_k


def test_per_task_is_token_mean_and_nan_when_absent():
    _, per_task = multitask_loss(L, MASK, TASKS, SAMPLES, "task_sample", 3)
    assert per_task[0].item() == pytest.approx(3.0)
    assert per_task[1].item() == pytest.approx(6.0)
    assert math.isnan(per_task[2].item())


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        multitask_loss(L, MASK, TASKS, SAMPLES, "nope", 3)
    with pytest.raises(ValueError, match="task_weights has 2 values"):
        multitask_loss(L, MASK, TASKS, SAMPLES, "task", 3, task_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="task ids in"):
        multitask_loss(L, torch.ones(7), TASKS, SAMPLES, "task", 3)
    with pytest.raises(ValueError, match="task_weights act only"):
        multitask_loss(L, MASK, TASKS, SAMPLES, "token", 3, task_weights=[1.0, 1.0, 1.0])


def reference_step(model: TinyLM, batch, mode: str) -> tuple[float, list[torch.Tensor]]:
    """multitask_loss over the whole step at once: the value and gradient every split must reproduce."""
    model.zero_grad()
    loss, _ = multitask_loss(*flat(batch, model.token_losses(batch)), mode, 3, **MODE_KWARGS[mode])
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", COMBINE_MODES)
@pytest.mark.parametrize("num_micro", [1, 2, 4, 8])
def test_accumulation_split_gives_same_loss_and_grads(mode, num_micro):
    batch = make_rows(num_rows=8, seed=3)
    model = TinyLM()
    ref_loss, ref_grads = reference_step(model, batch, mode)
    rows_per = 8 // num_micro
    micro = [split_rows(batch, list(range(i * rows_per, (i + 1) * rows_per))) for i in range(num_micro)]
    result, total = run_step(model, micro, mode)
    assert result.loss == pytest.approx(ref_loss, rel=1e-12)
    assert total == pytest.approx(ref_loss, rel=1e-12)
    for p, g in zip(model.parameters(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


def test_step_result_reports_global_per_task_statistics():
    batch = make_rows(num_rows=8, seed=5)
    model = TinyLM()
    with torch.no_grad():
        _, per_task = multitask_loss(*flat(batch, model.token_losses(batch)), "task", 3)
    micro = [split_rows(batch, [i, i + 1]) for i in range(0, 8, 2)]
    result, _ = run_step(model, micro, "task")
    torch.testing.assert_close(result.per_task_loss, per_task.to(torch.float64), equal_nan=True)
    mask = batch["targets"] != -100
    assert result.per_task_tokens.tolist() == [int(((batch["task_ids"] == k) & mask).sum()) for k in range(3)]
    assert result.tokens == int(mask.sum())
    assert result.task_weights.sum().item() == pytest.approx(1.0)


def test_protocol_misuse_fails_clearly():
    batch = make_rows(num_rows=2, seed=1)
    model = TinyLM()
    sl = StepLoss("focal_task", 3)
    with pytest.raises(RuntimeError, match="begin_step"):
        sl.micro_loss(model.token_losses(batch), batch)
    sl.begin_step([batch])
    with pytest.raises(RuntimeError, match="probe"):
        sl.micro_loss(model.token_losses(batch), batch)
    other = make_rows(num_rows=2, seed=9)
    other["sample_ids"] += 1000
    sl2 = StepLoss("sample", 3)
    sl2.begin_step([batch])
    with pytest.raises(ValueError, match="did not see"):
        sl2.micro_loss(model.token_losses(other), other)


@pytest.mark.distributed
def test_two_gloo_processes_match_one_process():
    """Same global batch: 1 process x 8 rows vs 2 gloo ranks with unequal shares (3 and 5 rows), 2 micro-batches
    each. Row 7 repeats row 0's sample ids, so one sample is split across ranks and must still count once."""
    results = two_rank_results()
    batch = make_rows(num_rows=8, seed=3)
    duplicate_first_row(batch)
    model = TinyLM()
    for mode in COMBINE_MODES:
        ref_loss, ref_grads = reference_step(model, batch, mode)
        got = results[mode]
        assert got["loss"] == pytest.approx(ref_loss, rel=1e-12), mode
        assert got["sum_micro"] == pytest.approx(ref_loss, rel=1e-12), mode
        for g, r in zip(got["grads"], ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def mftcoder_local_task_loss(token_loss, mb, weights) -> torch.Tensor:
    """MFTCoder's case3 as it runs: task-balanced INSIDE one micro-batch, over the tasks present in it."""
    mask = mb["targets"] != -100
    total, wsum = 0.0, 0.0
    for k in mb["task_ids"][mask].unique().tolist():
        sel = mask & (mb["task_ids"] == k)
        total = total + weights[k] * token_loss[sel].sum() / sel.sum()
        wsum += weights[k]
    return total / wsum


def single_task_micro_batches():
    """Four micro-batches of two rows, each micro-batch holding ONE task (a task-sorted or small-batch run)."""
    batch = make_rows(num_rows=8, seed=11)
    micro = []
    for i, rows in enumerate([[0, 1], [2, 3], [4, 5], [6, 7]]):
        mb = split_rows(batch, rows)
        mb["task_ids"] = torch.where(
            mb["task_ids"] >= 0, torch.full_like(mb["task_ids"], i % 3), mb["task_ids"]
        )
        micro.append(mb)
    return micro


def test_task_weights_act_on_single_task_micro_batches_unlike_mftcoder():
    micro = single_task_micro_batches()
    model = TinyLM()
    uniform, skewed = [1.0, 1.0, 1.0], [1.0, 6.0, 1.0]

    # MFTCoder: each micro-batch's loss is its one task's mean whatever the weights, so weights do nothing.
    @torch.no_grad()
    def mft(weights):
        return sum(
            float(mftcoder_local_task_loss(model.token_losses(mb), mb, weights)) for mb in micro
        ) / len(micro)

    assert mft(uniform) == pytest.approx(mft(skewed), rel=1e-12)

    # Ours: weights act, and the step loss is exactly the global task-balanced loss of the whole step.
    ours = {}
    for name, weights in (("uniform", uniform), ("skewed", skewed)):
        result, _ = run_step(model, micro, "task", StepLoss("task", 3, task_weights=weights))
        whole = {
            k: torch.cat([mb[k].reshape(-1) for mb in micro]) for k in ("targets", "task_ids", "sample_ids")
        }
        with torch.no_grad():
            token_loss = torch.cat([model.token_losses(mb).reshape(-1) for mb in micro])
        expected, _ = multitask_loss(
            token_loss,
            whole["targets"] != -100,
            whole["task_ids"],
            whole["sample_ids"],
            "task",
            3,
            task_weights=weights,
        )
        assert result.loss == pytest.approx(float(expected), rel=1e-12)
        ours[name] = result.loss
    assert ours["uniform"] != pytest.approx(ours["skewed"], rel=1e-3)
    # MFTCoder's equal micro-batch average also differs from the global task-balanced loss with uniform weights.
    assert mft(uniform) != pytest.approx(ours["uniform"], rel=1e-6)


@pytest.mark.parametrize("mode", COMBINE_MODES)
def test_a_step_without_supervised_tokens_gives_zero_loss_and_gradient(mode):
    batch = make_rows(num_rows=2, seed=6)
    batch["targets"] = torch.full_like(batch["targets"], -100)
    model = TinyLM()
    result, total = run_step(model, [batch], mode)
    assert result.loss == 0.0 and total == 0.0 and result.tokens == 0
    assert all(float(p.grad.abs().sum()) == 0.0 for p in model.parameters())
    assert torch.isnan(result.per_task_loss).all()
