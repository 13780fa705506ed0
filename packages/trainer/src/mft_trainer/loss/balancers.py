"""Dynamic task weights from per-task validation-loss curves: MFTCoder's self-paced scheme, CoBa and FAMO.

A balancer sees one vector of per-task validation losses per update (``update(step, losses)``) and produces
``task_weights`` (a probability vector over tasks). It never touches the training loss: the weights go to
:class:`mft_trainer.losses.StepLoss` (mode ``task``), which combines. Both keep their whole state in plain Python
floats so that ``state_dict()`` / ``load_state_dict()`` resume bit-exactly.

Slopes are least-squares lines through the last points of a curve, fitted in float64 with x = optimizer step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs`` (0 for fewer than two points or constant x).

    Written out (two sums) rather than through a solver: it is the textbook closed form, exact in float64.
    """
    n = len(ys)
    if n < 2:
        return 0.0
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0.0:
        return 0.0
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx


def _softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _check_losses(losses: torch.Tensor | Sequence[float], num_tasks: int) -> list[float]:
    vals = [float(v) for v in torch.as_tensor(losses, dtype=torch.float64).reshape(-1).tolist()]
    if len(vals) != num_tasks:
        raise ValueError(f"balancer got {len(vals)} task losses, expected {num_tasks}")
    bad = [k for k, v in enumerate(vals) if not math.isfinite(v) or v <= 0]
    if bad:
        raise ValueError(
            f"balancer needs a finite positive validation loss for every task; task indices {bad} have "
            f"{[vals[k] for k in bad]} (is every task present in the balancer slice?)"
        )
    return vals


class SelfPacedBalancer:
    """MFTCoder v0.3 self-paced task weights.

    At every update, with ``L_k(i)`` the raw validation losses of the last ``H`` updates (``history``)::

        alpha_k = least-squares slope of L_k over the last H points
        s_k     = K alpha_k / sum_j |alpha_j|
        score_k = softmax(s)_k * (-s_k)
        w_k     = softmax_k(scale * score_k)                      (scale = 50 in MFTCoder)

    Weights stay uniform until ``H`` points exist, and when every slope is 0.

    What this rewards: a task whose loss FALLS fastest has the most negative ``s_k``, hence the largest score and
    weight (self-paced = easy tasks first); a stalled task (``s_k = 0``) scores 0; a task whose validation loss
    RISES (``s_k > 0``) scores negative and loses weight. So, unlike CoBa, a stalled task does not gain weight here.
    MFTCoder initialised its history with zeros and skipped them in the fit; we simply wait for H real points.
    """

    def __init__(self, num_tasks: int, history: int = 100, scale: float = 50.0) -> None:
        if num_tasks < 1 or history < 2:
            raise ValueError(f"need num_tasks >= 1 and history >= 2, got {num_tasks}, {history}")
        self.num_tasks = num_tasks
        self.history = history
        self.scale = float(scale)
        self._steps: deque[float] = deque(maxlen=history)
        self._losses: deque[list[float]] = deque(maxlen=history)
        self._weights = [1.0 / num_tasks] * num_tasks

    @property
    def weights(self) -> torch.Tensor:
        return torch.tensor(self._weights, dtype=torch.float64)

    def slopes(self) -> list[float]:
        xs = list(self._steps)
        return [fit_slope(xs, [row[k] for row in self._losses]) for k in range(self.num_tasks)]

    def update(self, step: int, losses: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """Record the per-task validation losses measured at ``step``; return the new task weights."""
        self._steps.append(float(step))
        self._losses.append(_check_losses(losses, self.num_tasks))
        if len(self._losses) < self.history:
            return self.weights
        alpha = self.slopes()
        norm = sum(abs(a) for a in alpha)
        if norm == 0.0:
            self._weights = [1.0 / self.num_tasks] * self.num_tasks
            return self.weights
        s = [self.num_tasks * a / norm for a in alpha]
        soft = _softmax(s)
        score = [p * (-v) for p, v in zip(soft, s, strict=True)]
        self._weights = _softmax([self.scale * v for v in score])
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "self_paced",
            "num_tasks": self.num_tasks,
            "history": self.history,
            "scale": self.scale,
            "steps": list(self._steps),
            "losses": [list(r) for r in self._losses],
            "weights": list(self._weights),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "self_paced" or state["num_tasks"] != self.num_tasks:
            raise ValueError(
                f"state is not a self-paced state for {self.num_tasks} tasks: {state.get('kind')!r}"
            )
        self.history = int(state["history"])
        self.scale = float(state["scale"])
        self._steps = deque((float(v) for v in state["steps"]), maxlen=self.history)
        self._losses = deque(([float(v) for v in r] for r in state["losses"]), maxlen=self.history)
        self._weights = [float(v) for v in state["weights"]]


class CoBaBalancer:
    """CoBa, the convergence balancer (Gong et al., EMNLP 2024, arXiv 2410.06741), as the paper writes it.

    Each update gets the per-task validation losses ``L_k(t)`` at optimizer step ``t``; the first update fixes the
    normalisers ``L_k(0)``; curves are ``l_k(t) = L_k(t) / L_k(0)``. During the warm-up (steps < ``warmup``)
    weights are uniform. After it, with the last ``N`` (``history``) points of every curve::

        alpha_k(t)   slope of l_k over the last N points
        alpha_max(t) slope of max_k l_k (the largest normalised task loss at each point) over the same window
        RCS_k(t) = softmax_k( K alpha_k(t) / sum_j |alpha_j(t)| )
                   a task converging faster than the others (more negative slope) gets less weight
        ACS_k(t) = softmax_k( -N' alpha_k(t) / sum_{i in last N' updates} |alpha_k(i)| )
                   a task whose own slope turns upward (validation loss rising) gets less weight
        DF(t)    = min( T softmax_i( -tau T alpha_max(i) / sum_{j=1..T} |alpha_max(j)| )_{i=T}, 1 )
                   over the T post-warm-up updates so far: 1 while the worst task still converges as before,
                   towards 0 when it starts to diverge
        w_k(t)   = DF(t) RCS_k(t) + (1 - DF(t)) ACS_k(t)

    ``N'`` is the number of slopes in the ACS window (N once N updates have passed the warm-up). Zero denominators
    (flat curves) give zero logits, i.e. uniform scores.

    Deliberate differences from MFTCoder's implementation (v0.5), which the paper does not have: no extra outer
    ``softmax(K w)`` and no minimum-weight floor; DF is clipped at 1 (MFTCoder's is not, so ``1 - DF`` went
    negative); the ACS window is the last N slopes (MFTCoder offset it by the warm-up length); validation curves
    and per-task slopes are kept in bounded windows of N. The alpha_max history used by DF is the full
    post-warm-up history, as in the paper's sum over ``i = 1..t`` (one float per update).
    Differences from the paper: the update interval (``update_every`` steps between validation points) is ours
    to save compute; the window is counted in validation points, x is the optimizer step.
    """

    def __init__(self, num_tasks: int, warmup: int = 100, history: int = 200, tau: float = 5.0) -> None:
        if num_tasks < 1 or history < 2 or warmup < 0 or tau <= 0:
            raise ValueError(
                f"need num_tasks >= 1, history >= 2, warmup >= 0, tau > 0; got {num_tasks}, {history}, {warmup}, {tau}"
            )
        self.num_tasks = num_tasks
        self.warmup = warmup
        self.history = history
        self.tau = float(tau)
        self._initial: list[float] | None = None
        self._steps: deque[float] = deque(maxlen=history)
        self._curves: deque[list[float]] = deque(maxlen=history)
        self._slopes: deque[list[float]] = deque(maxlen=history)
        # alpha_max of every post-warm-up update (DF sums over all of them): a growing float64 buffer, so that
        # DF costs one vectorised pass per update even after 10^5 updates.
        self._alpha_max_buf = np.empty(1024, dtype=np.float64)
        self._alpha_max_len = 0
        self._weights = [1.0 / num_tasks] * num_tasks
        self.last: dict[str, list[float] | float] = {}

    @property
    def weights(self) -> torch.Tensor:
        return torch.tensor(self._weights, dtype=torch.float64)

    def update(self, step: int, losses: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """Record the per-task validation losses measured at ``step``; return the new task weights."""
        vals = _check_losses(losses, self.num_tasks)
        if self._initial is None:
            self._initial = vals
        curve = [v / v0 for v, v0 in zip(vals, self._initial, strict=True)]
        self._steps.append(float(step))
        self._curves.append(curve)
        if step < self.warmup or len(self._curves) < 2:
            return self.weights

        K = self.num_tasks
        xs = list(self._steps)
        alpha = [fit_slope(xs, [row[k] for row in self._curves]) for k in range(K)]
        alpha_max = fit_slope(xs, [max(row) for row in self._curves])
        self._slopes.append(alpha)
        self._append_alpha_max(alpha_max)

        norm = sum(abs(a) for a in alpha)
        rcs = _softmax([K * a / norm if norm > 0 else 0.0 for a in alpha])

        n_win = len(self._slopes)
        acs_logits = []
        for k in range(K):
            denom = sum(abs(row[k]) for row in self._slopes)
            acs_logits.append(-n_win * alpha[k] / denom if denom > 0 else 0.0)
        acs = _softmax(acs_logits)

        df = self._divergence_factor()

        self._weights = [df * r + (1.0 - df) * a for r, a in zip(rcs, acs, strict=True)]
        self.last = {"alpha": alpha, "alpha_max": alpha_max, "rcs": rcs, "acs": acs, "df": df}
        return self.weights

    def _append_alpha_max(self, value: float) -> None:
        if self._alpha_max_len == self._alpha_max_buf.size:
            self._alpha_max_buf = np.concatenate([self._alpha_max_buf, np.empty_like(self._alpha_max_buf)])
        self._alpha_max_buf[self._alpha_max_len] = value
        self._alpha_max_len += 1

    def _divergence_factor(self) -> float:
        """DF over the whole post-warm-up alpha_max history, vectorised: O(T) numpy per update, not Python."""
        hist = self._alpha_max_buf[: self._alpha_max_len]
        T = hist.size
        denom = float(np.abs(hist).sum())
        if denom == 0.0:
            return 1.0  # every logit is 0: softmax is 1/T, T * 1/T = 1
        logits = -self.tau * T * hist / denom
        logits -= logits.max()
        weights = np.exp(logits)
        return min(T * float(weights[-1] / weights.sum()), 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "coba",
            "num_tasks": self.num_tasks,
            "warmup": self.warmup,
            "history": self.history,
            "tau": self.tau,
            "initial": None if self._initial is None else list(self._initial),
            "steps": list(self._steps),
            "curves": [list(r) for r in self._curves],
            "slopes": [list(r) for r in self._slopes],
            "alpha_max": self._alpha_max_buf[: self._alpha_max_len].tolist(),
            "weights": list(self._weights),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "coba" or state["num_tasks"] != self.num_tasks:
            raise ValueError(f"state is not a CoBa state for {self.num_tasks} tasks: {state.get('kind')!r}")
        self.warmup = int(state["warmup"])
        self.history = int(state["history"])
        self.tau = float(state["tau"])
        self._initial = None if state["initial"] is None else [float(v) for v in state["initial"]]
        self._steps = deque((float(v) for v in state["steps"]), maxlen=self.history)
        self._curves = deque(([float(v) for v in r] for r in state["curves"]), maxlen=self.history)
        self._slopes = deque(([float(v) for v in r] for r in state["slopes"]), maxlen=self.history)
        self._alpha_max_buf = np.empty(max(1024, len(state["alpha_max"])), dtype=np.float64)
        self._alpha_max_len = 0
        for v in state["alpha_max"]:
            self._append_alpha_max(float(v))
        self._weights = [float(v) for v in state["weights"]]


class FamoBalancer:
    """FAMO's task weights (Liu et al., NeurIPS 2023, arXiv 2306.03792), the paper's Eq. 4 convergence loss.

    Logits ``xi`` (zeros at the start), weights ``z = softmax(xi)``; the training loss is ``c sum_k z_k log L_k``
    (mode ``famo`` of :func:`mft_trainer.loss.multitask.multitask_loss`). Each update gets the per-task validation
    losses ``V_k`` at the current step; with ``V_k^prev`` those of the previous update::

        delta_k = log V_k^prev - log V_k                 how much task k's log loss dropped since the last update
        grad_k  = (J_z^T delta)_k = z_k (delta_k - sum_j z_j delta_j)     (J_z = diag(z) - z z^T, softmax Jacobian)
        xi      <- Adam step on grad + weight_decay * xi  (lr, betas, eps; torch.optim.Adam's update, as FAMO's code)

    so a task whose loss dropped more than the weighted average loses weight and one that lagged gains it: every
    task's loss falls at about the same relative rate. The first update only records ``V^prev``.

    As FAMO's released code (``w_opt = Adam([w], lr=w_lr, weight_decay=gamma)``, defaults lr 0.025, decay 0.001).
    Differences: ``delta`` comes from the balancer's validation slice (the MFTCoder paper's description of Eq. 4)
    rather than from the same training batch re-evaluated after the step, and, with ``update_every`` > 1, spans
    that many optimizer steps. State is plain floats, so ``state_dict`` resumes bit-exactly.
    """

    def __init__(
        self,
        num_tasks: int,
        lr: float = 0.025,
        weight_decay: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if num_tasks < 1 or lr <= 0 or weight_decay < 0:
            raise ValueError(f"need num_tasks >= 1, lr > 0, weight_decay >= 0; got {num_tasks}, {lr}, {weight_decay}")
        self.num_tasks = num_tasks
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self._xi = [0.0] * num_tasks
        self._m = [0.0] * num_tasks
        self._v = [0.0] * num_tasks
        self._t = 0
        self._prev_log: list[float] | None = None
        self.last: dict[str, list[float]] = {}

    @property
    def logits(self) -> list[float]:
        return list(self._xi)

    @property
    def weights(self) -> torch.Tensor:
        return torch.tensor(_softmax(self._xi), dtype=torch.float64)

    def update(self, step: int, losses: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """Record the per-task validation losses measured at ``step``; return the new task weights."""
        logs = [math.log(v) for v in _check_losses(losses, self.num_tasks)]
        if self._prev_log is not None:
            delta = [p - c for p, c in zip(self._prev_log, logs, strict=True)]
            z = _softmax(self._xi)
            mean = sum(zk * dk for zk, dk in zip(z, delta, strict=True))
            grad = [zk * (dk - mean) + self.weight_decay * x for zk, dk, x in zip(z, delta, self._xi, strict=True)]
            self._adam_step(grad)
            self.last = {"delta": delta, "grad": grad}
        self._prev_log = logs
        return self.weights

    def _adam_step(self, grad: list[float]) -> None:
        """torch.optim.Adam's update (no amsgrad), written out in float64."""
        b1, b2 = self.betas
        self._t += 1
        for k, g in enumerate(grad):
            self._m[k] = b1 * self._m[k] + (1.0 - b1) * g
            self._v[k] = b2 * self._v[k] + (1.0 - b2) * g * g
            m_hat = self._m[k] / (1.0 - b1**self._t)
            v_hat = self._v[k] / (1.0 - b2**self._t)
            self._xi[k] -= self.lr * m_hat / (math.sqrt(v_hat) + self.eps)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "famo",
            "num_tasks": self.num_tasks,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "betas": list(self.betas),
            "eps": self.eps,
            "xi": list(self._xi),
            "m": list(self._m),
            "v": list(self._v),
            "t": self._t,
            "prev_log": None if self._prev_log is None else list(self._prev_log),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "famo" or state["num_tasks"] != self.num_tasks:
            raise ValueError(f"state is not a FAMO state for {self.num_tasks} tasks: {state.get('kind')!r}")
        self.lr = float(state["lr"])
        self.weight_decay = float(state["weight_decay"])
        self.betas = (float(state["betas"][0]), float(state["betas"][1]))
        self.eps = float(state["eps"])
        self._xi = [float(v) for v in state["xi"]]
        self._m = [float(v) for v in state["m"]]
        self._v = [float(v) for v in state["v"]]
        self._t = int(state["t"])
        self._prev_log = None if state["prev_log"] is None else [float(v) for v in state["prev_log"]]
