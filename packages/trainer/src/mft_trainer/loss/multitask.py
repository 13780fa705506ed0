"""Multi-task losses formed over a whole optimizer step, not per micro-batch.

Two entry points:

* :func:`multitask_loss` -- the pure combination: given every supervised token of one optimizer step (1-D tensors),
  return the step loss of a mode and the per-task token-mean losses. Users can call it directly.
* :class:`mft_trainer.loss.step.StepLoss` -- the same loss cut into micro-batches for gradient accumulation and data parallelism. The loop
  calls ``begin_step`` with all micro-batches of the step (only their targets/task ids/sample ids are read), then one
  ``micro_loss`` per micro-batch, each followed by its own backward. Global denominators (token counts, sample counts,
  tasks present, summed over all micro-batches of all ranks with ``torch.distributed.all_reduce``) are fixed in
  ``begin_step``, so the SUM of the micro-batch losses over all micro-batches of all ranks equals
  ``multitask_loss`` over the whole step, and so does the sum of their gradients.

Notation (docs/reference.md §3): token ``t`` has loss ``l_t`` (cross-entropy, so its probability is
``p_t = exp(-l_t)``), mask ``m_t`` (1 when supervised), task ``k(t)`` and sample ``s(t)``. Over the step:
``n_k`` supervised tokens of task ``k``; ``n_s`` supervised tokens of sample ``s``; ``M_k`` samples of task ``k``;
``N`` supervised tokens; ``S`` samples; ``K+`` the tasks present; ``w_k`` static (or balancer) task weights and
``W = sum_{k in K+} w_k``. A *sample* is identified by its ``sample_ids`` value (unique in the tokenized split), so the
segments of a packed row are separate samples and each is balanced under its own task::

    one packed row (targets already shifted; t = a supervised target id)
    segment_ids  1    1    1    1    1  |  2    2    2    2  |  0
    task_ids     0    0    0    0    0  |  2    2    2    2  | -1
    sample_ids   17   17   17   17   17 |  40   40   40   40 | -1
    targets     -100 -100  t    t  -100 | -100  t    t  -100 | -100
    -> task 0 gets 2 tokens of sample 17, task 2 gets 2 tokens of sample 40, from the same row

MFTCoder normalised every balanced loss inside one micro-batch on one rank, over the tasks present in it: task
weights did nothing when a micro-batch held one task, and every micro-batch counted equally whatever its size. Here
nothing depends on how the step is split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mft_trainer.loss.modes import TASK_MODES, check_combine_mode

# FAMO's log L_k needs L_k > 0; FAMO adds 1e-8 to every task loss, we floor it there (a task loss is never that low
# in practice, so the value is the unfloored one).
FAMO_FLOOR = 1e-8

# (1 - p)^gamma has an infinite derivative at p = 1 when gamma < 1; this floor keeps it finite and changes the value
# by less than float32 resolution.
_FOCAL_FLOOR = 1e-12


def task_vector(
    values: torch.Tensor | Sequence[float] | None, num_tasks: int, name: str, device: torch.device
) -> torch.Tensor:
    """A float64 vector of one value per task (ones when ``values`` is None), validated."""
    if values is None:
        return torch.ones(num_tasks, dtype=torch.float64, device=device)
    vec = torch.as_tensor(values, dtype=torch.float64).detach().to(device).reshape(-1)
    if vec.numel() != num_tasks:
        raise ValueError(f"{name} has {vec.numel()} values, expected one per task ({num_tasks})")
    if not torch.isfinite(vec).all() or (vec < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {vec.tolist()}")
    return vec


def focal_token_loss(token_loss: torch.Tensor, alpha_per_token: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-token focal loss ``-alpha (1 - p)^gamma log p = alpha (1 - exp(-l))^gamma l`` (paper Eq. 2's summand)."""
    if gamma == 0.0:
        return alpha_per_token * token_loss
    one_minus_p = (-torch.expm1(-token_loss)).clamp_min(_FOCAL_FLOOR)
    return alpha_per_token * one_minus_p.pow(gamma) * token_loss


def focal_task_terms(prob: torch.Tensor, alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """Paper Eq. 3's per-task term ``-alpha_k (1 - P_k)^gamma log P_k`` for task mean probabilities ``P_k``."""
    prob = prob.clamp(min=_FOCAL_FLOOR, max=1.0)
    term = -alpha * torch.log(prob)
    if gamma != 0.0:
        term = term * (1.0 - prob).clamp_min(_FOCAL_FLOOR).pow(gamma)
    return term


def focal_task_grad(prob: torch.Tensor, alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """d/dP of :func:`focal_task_terms`: ``-alpha [(1-P)^g / P - g (1-P)^(g-1) log P]``."""
    prob = prob.clamp(min=_FOCAL_FLOOR, max=1.0)
    grad = (1.0 / prob).clone()
    if gamma != 0.0:
        one_minus = (1.0 - prob).clamp_min(_FOCAL_FLOOR)
        grad = one_minus.pow(gamma) / prob - gamma * one_minus.pow(gamma - 1.0) * torch.log(prob)
    return -alpha * grad


def famo_terms(task_loss: torch.Tensor, share: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, float]:
    """FAMO's ``(log L_k, c)`` for task losses ``L_k`` and normalised weights ``z_k`` (zero for absent tasks).

    ``c = 1 / sum_{k present} z_k / L_k`` (0 when no task is present); ``log L_k`` is 0 for an absent task.
    """
    floored = task_loss.clamp_min(FAMO_FLOOR)
    logs = torch.where(present, torch.log(floored), torch.zeros_like(floored))
    inverse = torch.where(present, share / floored.detach(), torch.zeros_like(floored))
    total = float(inverse.sum())
    return logs, (1.0 / total if total > 0 else 0.0)


def famo_combine(task_loss: torch.Tensor, share: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 4 as FAMO computes it: ``c sum_k z_k log L_k`` with ``c`` treated as a constant."""
    logs, c = famo_terms(task_loss, share, present)
    return c * (share * logs).sum()


def multitask_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    task_ids: torch.Tensor,
    sample_ids: torch.Tensor,
    mode: str,
    num_tasks: int,
    task_weights: torch.Tensor | Sequence[float] | None = None,
    alpha: torch.Tensor | Sequence[float] | None = None,
    gamma: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine the per-token losses of one whole optimizer step into its multi-task loss.

    Args:
        token_loss: 1-D float, per-token cross-entropy ``l_t`` (``p_t = exp(-l_t)``), with gradient.
        mask: 1-D, nonzero where the token is supervised.
        task_ids: 1-D int, task index per token (``-1`` on padding).
        sample_ids: 1-D int, global sample index per token (``-1`` on padding).
        mode: one of ``token``, ``sample``, ``task``, ``task_sample``, ``focal_sample``, ``focal_task``, ``famo``.
        num_tasks: ``K``, the number of tasks of the dataset.
        task_weights: 1-D, ``w_k`` per task (ones if None); used by the task-balanced modes only (for ``famo``
            FAMO's ``z = softmax(xi)``, which :class:`mft_trainer.loss.balancers.FamoBalancer` sets).
        alpha: 1-D, focal ``alpha_k`` per task (ones if None); focal modes only.
        gamma: focal exponent (focal modes only; 0 makes ``focal_sample`` equal to ``task_sample``).

    Returns:
        ``(loss, per_task)``: ``loss`` a scalar with gradient; ``per_task`` a detached float ``[K]`` of each task's
        token-mean loss ``sum_{t in k} l_t / n_k`` (NaN for a task absent from the step).

    The modes (sums run over supervised tokens only; ``K+``, ``W`` as in the module docstring)::

        token         L = (1/N) sum_t l_t
        sample        L = (1/S) sum_s (1/n_s) sum_{t in s} l_t
        task          L = sum_{k in K+} (w_k/W) (1/n_k) sum_{t in k} l_t                      (MFTCoder Eq. 1)
        task_sample   L = sum_{k in K+} (w_k/W) (1/M_k) sum_{s in k} (1/n_s) sum_{t in s} l_t
        focal_sample  L = sum_{k in K+} (w_k/W) (1/M_k) sum_{s in k} (1/n_s) sum_{t in s} alpha_k (1-p_t)^gamma l_t
                                                                                              (paper Eq. 2)
        focal_task    P_k = (1/M_k) sum_{s in k} (1/n_s) sum_{t in s} p_t
                      L = sum_{k in K+} (w_k/W) [-alpha_k (1-P_k)^gamma log P_k]              (paper Eq. 3)
        famo          L_k = (1/n_k) sum_{t in k} l_t,  z_k = w_k/W,  c = 1 / sum_{k in K+} z_k / L_k  (no gradient)
                      L = c sum_{k in K+} z_k log L_k                                         (paper Eq. 4)

    ``famo`` is FAMO's weighted loss (Liu et al. 2023, ``get_weighted_loss`` of its code): its gradient
    ``c sum_k z_k grad(L_k) / L_k`` is a convex combination of the task gradients with weights ``c z_k / L_k``
    (summing to 1), so its scale stays that of one task loss while every task's *relative* improvement counts.

    With ``w_k = 1`` the factor ``w_k/W`` is the papers' ``1/N`` over the tasks present. A step with no supervised
    token gives a zero loss that still carries the graph.
    """
    check_combine_mode(mode)
    if not (token_loss.dim() == mask.dim() == task_ids.dim() == sample_ids.dim() == 1):
        raise ValueError(
            "multitask_loss takes 1-D tensors over every token of the step; flatten [B, L] first"
        )
    if not (token_loss.shape == mask.shape == task_ids.shape == sample_ids.shape):
        raise ValueError(
            f"shape mismatch: token_loss {tuple(token_loss.shape)}, mask {tuple(mask.shape)}, "
            f"task_ids {tuple(task_ids.shape)}, sample_ids {tuple(sample_ids.shape)}"
        )
    device = token_loss.device
    weights = task_vector(task_weights, num_tasks, "task_weights", device)
    alphas = task_vector(alpha, num_tasks, "alpha", device)
    if mode not in TASK_MODES and task_weights is not None:
        raise ValueError(
            f"task_weights act only in the task-balanced modes {TASK_MODES}, not in mode {mode!r}"
        )

    supervised = mask.bool()
    tasks = task_ids[supervised].long()
    if tasks.numel() and (tasks.min() < 0 or tasks.max() >= num_tasks):
        raise ValueError(
            f"supervised tokens must have task ids in [0, {num_tasks}), got {tasks.unique().tolist()}"
        )
    losses = token_loss[supervised]
    acc_dtype = torch.float64 if token_loss.dtype == torch.float64 else torch.float32
    n_task = torch.bincount(tasks, minlength=num_tasks).to(acc_dtype)
    sum_task = torch.zeros(num_tasks, dtype=acc_dtype, device=device).index_add(
        0, tasks, losses.detach().to(acc_dtype)
    )
    per_task = torch.where(n_task > 0, sum_task / n_task.clamp_min(1), torch.full_like(sum_task, math.nan))

    if losses.numel() == 0:
        return token_loss.sum() * 0.0, per_task
    if mode == "token":
        return losses.sum() / losses.numel(), per_task

    present = n_task > 0
    task_share = torch.where(present, weights, torch.zeros_like(weights)).to(acc_dtype)
    if mode in TASK_MODES:
        if task_share.sum() <= 0:
            raise ValueError("task weights of the tasks present in the step sum to 0")
        task_share = task_share / task_share.sum()

    if mode in ("task", "famo"):
        task_means = sum_task.new_zeros(num_tasks).index_add(
            0, tasks, losses.to(acc_dtype)
        ) / n_task.clamp_min(1)
        if mode == "famo":
            return famo_combine(task_means, task_share, present).to(token_loss.dtype), per_task
        return (task_share * task_means).sum().to(token_loss.dtype), per_task

    # Sample-level modes: a sample is a distinct sample id.
    _, inverse = torch.unique(sample_ids[supervised], return_inverse=True)
    num_samples = int(inverse.max()) + 1
    n_sample = torch.bincount(inverse, minlength=num_samples).to(acc_dtype)
    sample_task = torch.zeros(num_samples, dtype=torch.long, device=device).scatter(0, inverse, tasks)
    if mode == "focal_task":
        values = torch.exp(-losses)
    elif mode == "focal_sample":
        values = focal_token_loss(losses, alphas.to(losses.dtype)[tasks], gamma)
    else:
        values = losses
    sample_means = (
        values.new_zeros(num_samples, dtype=acc_dtype).index_add(0, inverse, values.to(acc_dtype)) / n_sample
    )
    if mode == "sample":
        return sample_means.mean().to(token_loss.dtype), per_task

    m_task = torch.bincount(sample_task, minlength=num_tasks).to(acc_dtype)
    task_means = sample_means.new_zeros(num_tasks).index_add(0, sample_task, sample_means) / m_task.clamp_min(
        1
    )
    if mode == "focal_task":
        terms = focal_task_terms(task_means, alphas.to(acc_dtype), gamma)
        terms = torch.where(present, terms, torch.zeros_like(terms))
        return (task_share * terms).sum().to(token_loss.dtype), per_task
    return (task_share * task_means).sum().to(token_loss.dtype), per_task
