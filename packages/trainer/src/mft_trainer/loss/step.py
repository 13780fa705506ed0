"""The multi-task loss of one optimizer step, cut into micro-batches whose gradients add up exactly.

The loop calls ``begin_step`` with all micro-batches of the step (only their targets, task ids and sample ids are
read), then one ``micro_loss`` per micro-batch, each followed by its own backward. Global denominators (token
counts, sample counts, tasks present, summed over all micro-batches of all ranks with
``torch.distributed.all_reduce``) are fixed in ``begin_step``, so the SUM of the micro-batch losses over all
micro-batches of all ranks equals :func:`mft_trainer.loss.multitask.multitask_loss` over the whole step, and so does
the sum of their gradients. Notation: :mod:`mft_trainer.loss.multitask`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mft_trainer.data.packing import IGNORE_INDEX
from mft_trainer.distributed import is_distributed
from mft_trainer.loss.modes import PROBE_MODES, SAMPLE_MODES, TASK_MODES, check_combine_mode
from mft_trainer.loss.multitask import (
    FAMO_FLOOR,
    famo_terms,
    focal_task_grad,
    focal_task_terms,
    focal_token_loss,
    task_vector,
)


@dataclass
class StepLossResult:
    """What one optimizer step's loss was, globally (all micro-batches, all ranks).

    ``per_task_loss`` is each task's token-mean cross-entropy (NaN for an absent task), ``per_task_tokens`` the
    supervised token counts, ``task_weights`` the normalised weights ``w_k/W`` actually applied (zeros for absent
    tasks; for ``token``/``sample`` modes each task's share of the tokens/samples).
    """

    loss: float
    per_task_loss: torch.Tensor
    per_task_tokens: torch.Tensor
    per_task_samples: torch.Tensor
    task_weights: torch.Tensor
    tokens: int


def _comm_device(group: dist.ProcessGroup | None, fallback: torch.device) -> torch.device:
    """NCCL reduces CUDA tensors only; every other backend (gloo) reduces CPU tensors."""
    if is_distributed(group) and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return fallback if fallback.type == "cpu" else torch.device("cpu")


class StepLoss:
    """A multi-task loss split into micro-batches whose gradients add up to the whole step's gradient.

    Protocol (one optimizer step)::

        step_loss.begin_step(micro_batches)   # global counts: all micro-batches of this rank, all-reduced over ranks
        if step_loss.needs_probe:             # focal_task and famo
            with torch.no_grad():
                for mb in micro_batches: step_loss.probe(token_losses(mb), mb)
            step_loss.finish_probe()
        for mb in micro_batches:
            loss = step_loss.micro_loss(token_losses(mb), mb)
            loss.backward()                   # the loop rescales if its backend averages over ranks
        result = step_loss.end_step()

    Why the sum of micro-batch gradients is exact. Every mode except ``focal_task`` is LINEAR in per-token values
    ``x_t`` (``x_t = l_t``, or the focal ``alpha_k (1-p_t)^gamma l_t``): ``L = sum_t c_t x_t`` where the coefficient
    ``c_t`` depends only on global COUNTS, never on losses::

        token         c_t = 1/N
        sample        c_t = 1/(S n_s)
        task          c_t = (w_k/W) / n_k
        task_sample   c_t = (w_k/W) / (M_k n_s)       (focal_sample: the same c_t on the focal x_t)

    ``begin_step`` all-reduces those counts (sample counts by all-gathering the (sample id, tokens, task) table, so a
    sample id seen on two ranks is still one sample, exactly as in :func:`multitask_loss`), and each micro-batch
    returns ``sum_{t in mb} c_t x_t``. Sum over micro-batches and ranks = ``L``; by linearity the gradients add up too.

    ``focal_task`` is not linear: ``L = sum_k (w_k/W) f_k(P_k)`` with ``P_k = sum_{t in k} c'_t p_t``,
    ``c'_t = 1/(M_k n_s)``. Its gradient is ``dL/dtheta = sum_t (w_k/W) f_k'(P_k) c'_t dp_t/dtheta``: linear in
    ``p_t`` once the global ``P_k`` is known. The probe pass (no grad) accumulates ``P_k``; ``finish_probe``
    all-reduces it; then each micro-batch returns ``sum_t g_k c'_t (p_t - stopgrad(p_t)) + L n_mb / N`` with
    ``g_k = (w_k/W) f_k'(P_k)``: the first term carries the exact gradient and is 0 in value, the second spreads
    the value of ``L`` over micro-batches by token share.

    ``famo`` (paper Eq. 4, FAMO's weighted loss) is ``L = c sum_k z_k log L_k`` with ``L_k = sum_{t in k} l_t / n_k``
    and the constant ``c = 1 / sum_k z_k / L_k``; its gradient ``sum_t g_k (1/n_k) dl_t/dtheta`` with
    ``g_k = c z_k / L_k`` is linear in ``l_t`` once the global ``L_k`` is known. The probe accumulates ``L_k``, then
    each micro-batch returns ``sum_t g_k (1/n_k) (l_t - stopgrad(l_t)) + L n_mb / N``, as for ``focal_task``; the
    ``task_weights`` of its result are the applied ``g_k`` (they sum to 1 over the tasks present).

    With dropout active, the probe and gradient passes draw
    different dropout masks unless the loop replays the RNG state: ``g_k`` then comes from the probe's masks and
    ``dp_t`` from the gradient pass's (exact without dropout, as in evaluation-mode tests).
    """

    def __init__(
        self,
        mode: str,
        num_tasks: int,
        task_weights: torch.Tensor | Sequence[float] | None = None,
        alpha: torch.Tensor | Sequence[float] | None = None,
        gamma: float = 0.0,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        check_combine_mode(mode)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        if mode not in TASK_MODES and task_weights is not None:
            raise ValueError(
                f"task_weights act only in the task-balanced modes {TASK_MODES}, not in mode {mode!r}"
            )
        self.mode = mode
        self.num_tasks = num_tasks
        self.gamma = float(gamma)
        self.process_group = process_group
        self._cpu = torch.device("cpu")
        self.task_weights = task_vector(task_weights, num_tasks, "task_weights", self._cpu)
        self.alpha = task_vector(alpha, num_tasks, "alpha", self._cpu)
        self._in_step = False

    # ---- configuration between steps -------------------------------------------------------------------------------
    def set_task_weights(self, task_weights: torch.Tensor | Sequence[float] | None) -> None:
        """Replace the task weights (a balancer calls this between optimizer steps)."""
        if self._in_step:
            raise RuntimeError("task weights cannot change inside an optimizer step")
        if self.mode not in TASK_MODES and task_weights is not None:
            raise ValueError(
                f"task_weights act only in the task-balanced modes {TASK_MODES}, not in {self.mode!r}"
            )
        self.task_weights = task_vector(task_weights, self.num_tasks, "task_weights", self._cpu)

    @property
    def needs_probe(self) -> bool:
        """True when the step needs a no-grad probe pass before the gradient pass (``focal_task``, ``famo``)."""
        return self.mode in PROBE_MODES

    # ---- step protocol ---------------------------------------------------------------------------------------------
    def begin_step(self, micro_batches: Sequence[dict[str, torch.Tensor]]) -> None:
        """Count supervised tokens (and samples) of the step over all micro-batches of all ranks."""
        if not micro_batches:
            raise ValueError("begin_step needs the micro-batches of the step (got none)")
        first = micro_batches[0]["targets"]
        comm = _comm_device(self.process_group, first.device)
        tasks_all, samples_all = [], []
        for i, mb in enumerate(micro_batches):
            for key in ("targets", "task_ids", "sample_ids"):
                if key not in mb:
                    raise KeyError(f"micro-batch {i} has no {key!r} (see the micro-batch contract)")
            supervised = mb["targets"] != IGNORE_INDEX
            tasks_all.append(mb["task_ids"][supervised].reshape(-1).to(comm, torch.long))
            samples_all.append(mb["sample_ids"][supervised].reshape(-1).to(comm, torch.long))
        tasks = torch.cat(tasks_all)
        samples = torch.cat(samples_all)
        K = self.num_tasks
        if self.mode != "token" and tasks.numel() and (tasks.min() < 0 or tasks.max() >= K):
            raise ValueError(
                f"supervised tokens must have task ids in [0, {K}), got {tasks.unique().tolist()}"
            )

        in_range = (tasks >= 0) & (tasks < K)
        counts = torch.zeros(1 + K, dtype=torch.float64, device=comm)
        counts[0] = tasks.numel()
        counts[1:] = torch.bincount(tasks[in_range], minlength=K).to(torch.float64)
        if is_distributed(self.process_group):
            dist.all_reduce(counts, group=self.process_group)
        self._tokens = counts[0].item()
        n_task = counts[1:].cpu()
        self._n_task = n_task

        weights = torch.where(n_task > 0, self.task_weights, torch.zeros_like(self.task_weights))
        if self.mode in TASK_MODES and self._tokens > 0:
            if weights.sum() <= 0:
                raise ValueError("task weights of the tasks present in the step sum to 0")
            weights = weights / weights.sum()
        self._share = weights  # w_k / W over tasks present (task modes)

        self._sample_ids = None
        self._m_task = torch.zeros(K, dtype=torch.float64)
        if self.mode in SAMPLE_MODES:
            ids, n_sample, sample_task = self._global_sample_table(samples, tasks, comm)
            self._sample_ids = ids  # sorted, CPU
            self._n_sample = n_sample
            self._m_task = (
                torch.bincount(sample_task, minlength=K).to(torch.float64) if ids.numel() else self._m_task
            )
            self._num_samples = ids.numel()

        # Per-task factor so that c_t = factor[k] (token, task) or factor[k] / n_s (sample modes).
        if self.mode == "token":
            factor = torch.full((K,), 1.0 / max(self._tokens, 1.0), dtype=torch.float64)
        elif self.mode == "task":
            factor = self._share / n_task.clamp_min(1)
        elif self.mode == "famo":  # c'_t = 1/n_k: the probe sums each task's token mean L_k
            factor = torch.where(n_task > 0, 1.0 / n_task.clamp_min(1), torch.zeros_like(n_task))
        elif self.mode == "sample":
            factor = torch.full((K,), 1.0 / max(self._num_samples, 1), dtype=torch.float64)
        else:  # task_sample, focal_sample, focal_task (c'_t)
            factor = torch.where(
                self._m_task > 0, 1.0 / self._m_task.clamp_min(1), torch.zeros_like(self._m_task)
            )
            if self.mode != "focal_task":
                factor = self._share * factor
        self._factor = factor
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}
        # Accumulators live on the device of the token losses (no host sync per micro-batch); they move to the
        # communication device once, in finish_probe / end_step.
        self._sum_task: torch.Tensor | None = None
        self._value: torch.Tensor | None = None
        self._prob: torch.Tensor | None = None
        self._probe_done = False
        self._comm = comm
        self._in_step = True

    def _global_sample_table(
        self, samples: torch.Tensor, tasks: torch.Tensor, comm: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sorted unique sample ids of the step over all ranks, their supervised token counts and tasks."""
        if samples.numel() and samples.min() < 0:
            raise ValueError(
                "a supervised token has sample id -1; sample-level modes need a sample id per token"
            )
        ids, inverse = torch.unique(samples, return_inverse=True)
        n = torch.bincount(inverse, minlength=ids.numel())
        task = torch.zeros(ids.numel(), dtype=torch.long, device=comm).scatter(0, inverse, tasks)
        table = (
            torch.stack([ids, n, task], dim=1)
            if ids.numel()
            else torch.zeros(0, 3, dtype=torch.long, device=comm)
        )
        if is_distributed(self.process_group):
            # Ranks hold different numbers of samples: gather sizes, pad to the largest, gather, merge by id.
            world = dist.get_world_size(self.process_group)
            size = torch.tensor([table.shape[0]], dtype=torch.long, device=comm)
            sizes = [torch.zeros_like(size) for _ in range(world)]
            dist.all_gather(sizes, size, group=self.process_group)
            longest = int(max(s.item() for s in sizes))
            padded = torch.zeros(longest, 3, dtype=torch.long, device=comm)
            padded[: table.shape[0]] = table
            gathered = [torch.zeros_like(padded) for _ in range(world)]
            dist.all_gather(gathered, padded, group=self.process_group)
            table = torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes, strict=True)])
            ids, inverse = torch.unique(table[:, 0], return_inverse=True)
            n = torch.zeros(ids.numel(), dtype=torch.long, device=comm).index_add(0, inverse, table[:, 1])
            task = torch.zeros(ids.numel(), dtype=torch.long, device=comm).scatter(0, inverse, table[:, 2])
        return ids.cpu(), n.cpu().to(torch.float64), task.cpu()

    def _coefficients(
        self, mb: dict[str, torch.Tensor], like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token ``c_t`` (0 where unsupervised) and clamped task ids for one micro-batch, shaped like the batch."""
        key = (like.device, like.dtype)
        if key not in self._tables:
            tabs = [self._factor.to(like.device, like.dtype)]
            if self._sample_ids is not None:
                tabs += [self._sample_ids.to(like.device), self._n_sample.to(like.device, like.dtype)]
            self._tables[key] = tuple(tabs)
        tabs = self._tables[key]
        supervised = mb["targets"].to(like.device) != IGNORE_INDEX
        tasks = mb["task_ids"].to(like.device).long()
        if self.mode == "token":
            tasks = tasks.clamp(0, self.num_tasks - 1)  # token mode tolerates missing task ids
        safe_tasks = torch.where(supervised, tasks, torch.zeros_like(tasks))
        coef = tabs[0][safe_tasks]
        if self._sample_ids is not None:
            ids, n_sample = tabs[1], tabs[2]
            samples = mb["sample_ids"].to(like.device).long()
            unseen = "micro-batch holds a sample that begin_step did not see; pass the same micro-batches"
            if ids.numel() == 0:  # no supervised token in the whole step
                if supervised.any():
                    raise ValueError(unseen)
                return torch.zeros_like(like), safe_tasks
            pos = torch.searchsorted(ids, samples).clamp_max(ids.numel() - 1)
            if not torch.equal(ids[pos][supervised], samples[supervised]):
                raise ValueError(unseen)
            coef = coef / n_sample[pos]
        coef = torch.where(supervised, coef, torch.zeros_like(coef))
        return coef, safe_tasks

    def _check_in_step(self, token_loss: torch.Tensor, mb: dict[str, torch.Tensor]) -> None:
        if not self._in_step:
            raise RuntimeError("call begin_step(micro_batches) before probe/micro_loss")
        if token_loss.shape != mb["targets"].shape:
            raise ValueError(
                f"token_loss shape {tuple(token_loss.shape)} != targets {tuple(mb['targets'].shape)}"
            )

    def probe(self, token_loss: torch.Tensor, mb: dict[str, torch.Tensor]) -> None:
        """Accumulate this micro-batch's share of ``P_k`` (focal_task) or ``L_k`` (famo); under ``torch.no_grad()``."""
        self._check_in_step(token_loss, mb)
        if not self.needs_probe:
            raise RuntimeError(f"mode {self.mode!r} needs no probe pass")
        coef, tasks = self._coefficients(mb, token_loss.detach())
        supervised = mb["targets"].to(token_loss.device) != IGNORE_INDEX
        values = torch.where(supervised, token_loss.detach(), torch.zeros_like(token_loss.detach()))
        if self.mode == "focal_task":
            values = torch.exp(-values)
        contrib = (coef * values).reshape(-1).to(torch.float64)
        if self._prob is None:
            self._prob = torch.zeros(self.num_tasks, dtype=torch.float64, device=token_loss.device)
        self._prob.index_add_(0, tasks.reshape(-1), contrib)

    def finish_probe(self) -> None:
        """All-reduce ``P_k`` (``L_k``) over ranks and fix the gradient factors ``g_k`` and the loss value."""
        if not self.needs_probe:
            raise RuntimeError(f"mode {self.mode!r} needs no probe pass")
        prob = torch.zeros(self.num_tasks, dtype=torch.float64) if self._prob is None else self._prob
        prob = prob.to(self._comm)
        if is_distributed(self.process_group):
            dist.all_reduce(prob, group=self.process_group)
        prob = prob.cpu()
        present = self._n_task > 0
        if self.mode == "famo":
            logs, c = famo_terms(prob, self._share, present)
            self._focal_value = c * float((self._share * logs).sum())
            self._grad_factor = torch.where(
                present, c * self._share / prob.clamp_min(FAMO_FLOOR), torch.zeros_like(prob)
            )
        else:
            terms = torch.where(present, focal_task_terms(prob, self.alpha, self.gamma), torch.zeros_like(prob))
            self._focal_value = float((self._share * terms).sum())
            self._grad_factor = torch.where(
                present, self._share * focal_task_grad(prob, self.alpha, self.gamma), torch.zeros_like(prob)
            )
        self._probe_prob = torch.where(present, prob, torch.full_like(prob, math.nan))
        self._tables = {}
        self._probe_done = True

    def micro_loss(self, token_loss: torch.Tensor, mb: dict[str, torch.Tensor]) -> torch.Tensor:
        """This micro-batch's share of the step loss: a scalar with gradient.

        The sum of these values (and of their gradients) over all micro-batches of all ranks is the step loss of
        :func:`multitask_loss` over the concatenated step (and its gradient).
        """
        self._check_in_step(token_loss, mb)
        coef, tasks = self._coefficients(mb, token_loss)
        supervised = mb["targets"].to(token_loss.device) != IGNORE_INDEX
        masked = torch.where(supervised, token_loss, torch.zeros_like(token_loss))
        if self._sum_task is None:
            self._sum_task = torch.zeros(self.num_tasks, dtype=torch.float64, device=token_loss.device)
            self._value = torch.zeros(1, dtype=torch.float64, device=token_loss.device)
        self._sum_task.index_add_(0, tasks.reshape(-1), masked.detach().reshape(-1).to(torch.float64))
        if self.mode in PROBE_MODES:
            if not self._probe_done:
                raise RuntimeError(f"{self.mode} needs the probe pass (probe + finish_probe) before micro_loss")
            g = self._grad_factor.to(token_loss.device, token_loss.dtype)[tasks]
            value = torch.exp(-masked) if self.mode == "focal_task" else masked
            surrogate = (g * coef * (value - value.detach())).sum()
            share = supervised.sum().item() / self._tokens if self._tokens > 0 else 0.0
            loss = surrogate + self._focal_value * share
        elif self.mode == "focal_sample":
            alpha = self.alpha.to(token_loss.device, token_loss.dtype)[tasks]
            loss = (coef * focal_token_loss(masked, alpha, self.gamma)).sum()
        else:
            loss = (coef * masked).sum()
        self._value += loss.detach().to(torch.float64)
        return loss

    def end_step(self) -> StepLossResult:
        """Close the step: the global loss value and per-task statistics (one all-reduce)."""
        if not self._in_step:
            raise RuntimeError("end_step without begin_step")
        K = self.num_tasks
        if self._sum_task is None:  # no micro_loss on this rank (it still joins the all-reduce)
            packed = torch.zeros(1 + K, dtype=torch.float64, device=self._comm)
        else:
            packed = torch.cat([self._value, self._sum_task]).to(self._comm)
        if is_distributed(self.process_group):
            dist.all_reduce(packed, group=self.process_group)
        packed = packed.cpu()
        sum_task = packed[1:]
        per_task = torch.where(
            self._n_task > 0,
            sum_task / self._n_task.clamp_min(1),
            torch.full((K,), math.nan, dtype=torch.float64),
        )
        if self.mode == "famo":
            applied = self._grad_factor.clone() if self._probe_done else self._share.clone()
        elif self.mode in TASK_MODES:
            applied = self._share.clone()
        elif self.mode == "token":
            applied = self._n_task / max(self._tokens, 1.0)
        else:
            applied = self._m_task / max(self._num_samples, 1)
        self._in_step = False
        return StepLossResult(
            loss=float(packed[0]),
            per_task_loss=per_task,
            per_task_tokens=self._n_task.round().long(),
            per_task_samples=self._m_task.round().long(),
            task_weights=applied,
            tokens=int(self._tokens),
        )
