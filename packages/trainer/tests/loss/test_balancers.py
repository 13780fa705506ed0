"""Balancers on synthetic validation curves whose right weights are known, golden CoBa values, exact resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from mft_trainer.loss.balancers import CoBaBalancer, FamoBalancer, SelfPacedBalancer, fit_slope


def steady(t: int) -> float:
    return 2.0 - 0.003 * t


def flat(t: int) -> float:
    return 2.0


def rises_after_200(t: int) -> float:
    return steady(t) if t < 200 else steady(200) + 0.004 * (t - 200)


def fast(t: int) -> float:
    return 2.0 - 0.006 * t


def run(balancer, curves, steps=300):
    weights = None
    for t in range(steps):
        weights = balancer.update(t, [c(t) for c in curves])
    return weights


def test_fit_slope_matches_numpy():
    xs = [0.0, 1.0, 2.0, 5.0, 7.0]
    ys = [3.0, 2.5, 2.7, 1.0, 0.2]
    assert fit_slope(xs, ys) == pytest.approx(np.polyfit(xs, ys, 1)[0], rel=1e-12)
    assert fit_slope([1.0], [2.0]) == 0.0


def test_coba_stalled_task_gains_weight():
    w = run(CoBaBalancer(3, warmup=50, history=40), [steady, steady, flat])
    assert w[2] > 1 / 3 > w[0]
    assert w[0] == pytest.approx(w[1])
    assert w.sum().item() == pytest.approx(1.0)


def test_coba_task_whose_validation_loss_rises_loses_weight():
    b = CoBaBalancer(3, warmup=50, history=40)
    w = run(b, [steady, steady, rises_after_200])
    assert w[2] < 1 / 3 < w[0]
    assert b.last["df"] < 0.5  # the worst task diverges: ACS takes over from RCS


def test_coba_equal_weights_when_all_converge_alike():
    w = run(CoBaBalancer(3, warmup=50, history=40), [steady, steady, steady])
    torch.testing.assert_close(w, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_coba_uniform_during_warmup():
    b = CoBaBalancer(2, warmup=100, history=10)
    w = run(b, [steady, flat], steps=100)
    torch.testing.assert_close(w, torch.full((2,), 0.5, dtype=torch.float64))


def softmax(v):
    e = np.exp(np.asarray(v) - np.max(v))
    return e / e.sum()


def test_coba_golden_update_written_from_the_paper():
    """Three points per window, two tasks, every quantity recomputed with numpy from the paper's equations."""
    losses = [[4.0, 2.0], [3.0, 1.9], [2.6, 1.7], [2.5, 1.75]]
    tau = 2.0
    b = CoBaBalancer(2, warmup=1, history=3, tau=tau)
    for t, row in enumerate(losses):
        w = b.update(t, row)
    curves = np.array(losses) / np.array(losses[0])
    slopes = []  # alpha_k(t) for t = 1, 2, 3 (post-warm-up updates), window of the last 3 points
    amax = []
    for t in (1, 2, 3):
        lo = max(0, t - 2)
        xs = np.arange(lo, t + 1)
        slopes.append([np.polyfit(xs, curves[lo : t + 1, k], 1)[0] for k in range(2)])
        amax.append(np.polyfit(xs, curves[lo : t + 1].max(axis=1), 1)[0])
    alpha = np.array(slopes[-1])
    rcs = softmax(2 * alpha / np.abs(alpha).sum())
    window = np.array(slopes)  # N' = 3 slopes
    acs = softmax(-3 * alpha / np.abs(window).sum(axis=0))
    T = 3
    df = min(T * softmax(-tau * T * np.array(amax) / np.abs(amax).sum())[-1], 1.0)
    expected = df * rcs + (1 - df) * acs
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12)
    assert b.last["df"] == pytest.approx(df, rel=1e-12)


def test_coba_divergence_factor_is_clipped_at_one():
    b = CoBaBalancer(2, warmup=0, history=5, tau=5.0)
    # The worst task speeds up its descent: the last alpha_max is the most negative, T * softmax > 1.
    for t in range(12):
        b.update(t, [3.0 - 0.01 * t * t, 2.0 - 0.001 * t])
    assert b.last["df"] == 1.0
    w = b.weights
    assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0)


def test_self_paced_formula_and_behaviour():
    sp = SelfPacedBalancer(3, history=20, scale=50.0)
    w = run(sp, [fast, steady, rises_after_200])
    alpha = np.array(sp.slopes())
    s = 3 * alpha / np.abs(alpha).sum()
    expected = softmax(50 * softmax(s) * (-s))
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12)
    # Easy first: the fastest-falling task leads, the rising task gets the least.
    assert w[0] > w[1] > w[2]


def test_self_paced_uniform_until_history_and_when_alike():
    sp = SelfPacedBalancer(2, history=10)
    for t in range(9):
        w = sp.update(t, [steady(t), flat(t)])
    torch.testing.assert_close(w, torch.full((2,), 0.5, dtype=torch.float64))
    w = run(SelfPacedBalancer(3, history=10), [steady, steady, steady], steps=50)
    torch.testing.assert_close(w, torch.full((3,), 1 / 3, dtype=torch.float64))
    # Self-paced rewards improvement: a stalled task LOSES weight (the opposite of CoBa's RCS).
    w = run(SelfPacedBalancer(2, history=10), [steady, flat], steps=50)
    assert w[1] < 0.5


def famo_reference(curves, steps, lr=0.025, weight_decay=0.001):
    """FAMO's released update, written with torch as its code does: the softmax's vector-Jacobian product with the
    drop of the log losses as the gradient of the logits, and torch.optim.Adam(lr, weight_decay) on them."""
    w = torch.zeros(len(curves), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr, weight_decay=weight_decay)
    prev = None
    out = []
    for t in range(steps):
        now = torch.tensor([c(t) for c in curves], dtype=torch.float64)
        if prev is not None:
            delta = prev.log() - now.log()
            (d,) = torch.autograd.grad(torch.softmax(w, -1), w, grad_outputs=delta)
            opt.zero_grad()
            w.grad = d
            opt.step()
        prev = now
        out.append(torch.softmax(w.detach(), -1).clone())
    return out


def test_famo_matches_its_reference_update():
    curves = [steady, fast, lambda t: 2.0 - 0.002 * t + 0.01 * math.sin(t)]
    ours = FamoBalancer(3)
    reference = famo_reference(curves, 120)
    for t in range(120):
        torch.testing.assert_close(ours.update(t, [c(t) for c in curves]), reference[t], rtol=1e-12, atol=1e-14)


def test_famo_task_that_lags_gains_weight():
    # "fast" halves its loss long before "steady"; a flat task does not improve at all: it gets the most weight.
    w = run(FamoBalancer(3), [fast, steady, flat], steps=300)
    assert w[2] > w[1] > w[0]
    assert float(w.sum()) == pytest.approx(1.0)
    alike = run(FamoBalancer(2), [steady, steady], steps=100)
    torch.testing.assert_close(alike, torch.full((2,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize(
    "make",
    [lambda: CoBaBalancer(3, warmup=20, history=15), lambda: SelfPacedBalancer(3, 15), lambda: FamoBalancer(3)],
)
def test_state_round_trip_resumes_exactly(make):
    curves = [steady, lambda t: 2.0 - 0.002 * t + 0.01 * math.sin(t), rises_after_200]
    full = make()
    full_weights = [full.update(t, [c(t) for c in curves]) for t in range(260)]
    first = make()
    for t in range(130):
        first.update(t, [c(t) for c in curves])
    state = json.loads(json.dumps(first.state_dict()))  # plain types only
    resumed = make()
    resumed.load_state_dict(state)
    for t in range(130, 260):
        assert torch.equal(resumed.update(t, [c(t) for c in curves]), full_weights[t])


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match="task indices \\[1\\]"):
        CoBaBalancer(2).update(0, [1.0, float("nan")])
    with pytest.raises(ValueError, match="expected 3"):
        SelfPacedBalancer(3).update(0, [1.0, 2.0])
    with pytest.raises(ValueError, match="not a CoBa state"):
        CoBaBalancer(2).load_state_dict(SelfPacedBalancer(2).state_dict())
    with pytest.raises(ValueError, match="not a FAMO state"):
        FamoBalancer(2).load_state_dict(CoBaBalancer(2).state_dict())
    with pytest.raises(ValueError, match="task indices \\[0\\]"):
        FamoBalancer(2).update(0, [0.0, 1.0])
