"""Per-task validation loss over a whole split, and the cached held-out slice the balancers read.

The validation loss of task ``k`` is ``sum_{t in k} l_t / n_k`` over EVERY supervised token of the split on every
rank (sums and counts all-reduced once), not a mean of per-batch means: batches of different sizes and task mixes
would otherwise weigh differently depending on how the split was cut.

The model is reached only through a callable ``token_losses(batch) -> [B, L] per-token cross-entropy`` (0 where
``targets == -100``); a tuple return ``(token_loss, aux_loss)`` (the model seam's form) is accepted too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from mft_trainer.data.packing import IGNORE_INDEX

Batch = dict[str, torch.Tensor]
TokenLossFn = Callable[[Batch], torch.Tensor | tuple[torch.Tensor, ...]]


@dataclass
class ValidationResult:
    """Per-task token-mean losses (NaN for a task without tokens) and the split's overall token mean."""

    per_task_loss: torch.Tensor
    per_task_tokens: torch.Tensor
    loss: float
    tokens: int
    seconds: float = 0.0

    def task_mean(self) -> float:
        """Unweighted mean over the tasks present of their token-mean losses."""
        present = self.per_task_tokens > 0
        return float(self.per_task_loss[present].mean()) if present.any() else math.nan

    def metric(self, name: str, task_names: Sequence[str]) -> float:
        """``total`` (token mean over the split), ``task_mean``, or one task's loss by name."""
        if name == "total":
            return self.loss
        if name == "task_mean":
            return self.task_mean()
        if name not in task_names:
            raise ValueError(
                f"unknown validation metric {name!r}: use total, task_mean or one of {list(task_names)}"
            )
        return float(self.per_task_loss[list(task_names).index(name)])


def _is_distributed(group: dist.ProcessGroup | None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


@contextmanager
def _eval_mode(model: torch.nn.Module | None):
    """Dropout off during evaluation, the previous mode restored after (also on error)."""
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    try:
        yield
    finally:
        if model is not None and was_training:
            model.train()


def evaluate_per_task(
    token_losses: TokenLossFn,
    batches: Iterable[Batch],
    num_tasks: int,
    *,
    model: torch.nn.Module | None = None,
    process_group: dist.ProcessGroup | None = None,
    device: torch.device | None = None,
) -> ValidationResult:
    """Per-task validation loss token-weighted over all ``batches`` of all ranks (one all-reduce at the end).

    Every rank must call this at the same time (it all-reduces when ``torch.distributed`` is initialized), even a
    rank with no batches: ranks with fewer batches run fully masked filler batches (on ``device``) so that sharded
    backends (FSDP, ZeRO-3), which need every rank in every forward, do not hang. ``model``, when given, is put in
    eval mode for the pass and restored afterwards.
    """
    start = time.perf_counter()
    batches = list(batches)
    if _is_distributed(process_group):
        batches = _pad_to_common_count(batches, process_group, device)
    sums = torch.zeros(num_tasks, dtype=torch.float64)
    counts = torch.zeros(num_tasks, dtype=torch.float64)
    with torch.no_grad(), _eval_mode(model):
        for i, batch in enumerate(batches):
            out = token_losses(batch)
            token_loss = out[0] if isinstance(out, tuple) else out
            targets = batch["targets"].to(token_loss.device)
            if token_loss.shape != targets.shape:
                raise ValueError(
                    f"validation batch {i}: token_loss {tuple(token_loss.shape)} != targets shape"
                )
            supervised = targets != IGNORE_INDEX
            tasks = batch["task_ids"].to(token_loss.device)[supervised].long()
            if tasks.numel() and (tasks.min() < 0 or tasks.max() >= num_tasks):
                raise ValueError(
                    f"validation batch {i}: supervised tokens with task ids outside [0, {num_tasks})"
                )
            sums += (
                torch.zeros(num_tasks, dtype=torch.float64, device=tasks.device)
                .index_add(0, tasks, token_loss[supervised].double())
                .cpu()
            )
            counts += torch.bincount(tasks, minlength=num_tasks).double().cpu()
    if _is_distributed(process_group):
        packed = torch.cat([sums, counts])
        if dist.get_backend(process_group) == "nccl":
            packed = packed.cuda()
        dist.all_reduce(packed, group=process_group)
        packed = packed.cpu()
        sums, counts = packed[:num_tasks], packed[num_tasks:]
    per_task = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, math.nan))
    total_tokens = float(counts.sum())
    loss = float(sums.sum() / total_tokens) if total_tokens > 0 else math.nan
    return ValidationResult(
        per_task_loss=per_task,
        per_task_tokens=counts.round().long(),
        loss=loss,
        tokens=int(total_tokens),
        seconds=time.perf_counter() - start,
    )


def _pad_to_common_count(
    batches: list[Batch], group: dist.ProcessGroup | None, device: torch.device | None
) -> list[Batch]:
    """Append fully masked batches until every rank has as many batches as the rank with the most."""
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else None
    count = torch.tensor([len(batches)], dtype=torch.long, device=comm)
    dist.all_reduce(count, op=dist.ReduceOp.MAX, group=group)
    missing = int(count.item()) - len(batches)
    if missing <= 0:
        return batches
    if batches:
        filler = dict(batches[0])
        filler["targets"] = torch.full_like(filler["targets"], IGNORE_INDEX)
    else:
        ids = torch.zeros(1, 8, dtype=torch.long, device=device)
        filler = {
            "input_ids": ids,
            "targets": torch.full_like(ids, IGNORE_INDEX),
            "position_ids": torch.arange(8, device=device).unsqueeze(0),
            "segment_ids": torch.ones_like(ids),
            "task_ids": torch.zeros_like(ids),
            "sample_ids": torch.zeros_like(ids),
        }
    return batches + [filler] * missing


def _batch_task_samples(batch: Batch) -> dict[int, set[int]]:
    supervised = batch["targets"] != IGNORE_INDEX
    tasks = batch["task_ids"][supervised].tolist()
    samples = batch["sample_ids"][supervised].tolist()
    out: dict[int, set[int]] = {}
    for t, s in zip(tasks, samples, strict=True):
        out.setdefault(int(t), set()).add(int(s))
    return out


def _keep_samples(batch: Batch, keep: set[int], *, inside: bool) -> Batch:
    """A view of ``batch`` whose targets supervise only the samples in ``keep`` (``inside``) or only the others.

    Packed segments are isolated in attention, so masking other segments' targets leaves a sample's loss as is.
    """
    ids = torch.tensor(sorted(keep), dtype=batch["sample_ids"].dtype, device=batch["sample_ids"].device)
    member = torch.isin(batch["sample_ids"], ids)
    selected = member if inside else ~member
    out = dict(batch)
    out["targets"] = torch.where(selected, batch["targets"], torch.full_like(batch["targets"], IGNORE_INDEX))
    return out


def split_validation(
    batches: Sequence[Batch], num_tasks: int, *, slice_mode: str, samples_per_task: int
) -> tuple[list[Batch], list[Batch]]:
    """Choose the balancer slice from this rank's validation micro-batches: ``(slice, early_stopping_set)``.

    Walks the batches in order and takes, per task, the first ``samples_per_task`` samples (by sample id within a
    batch) for the slice; deterministic, so a resumed run picks the same slice. Selection is per SAMPLE, not per
    micro-batch: a slice batch is a copy whose targets supervise only the chosen samples. With
    ``slice_mode="separate"`` the chosen samples leave the early-stopping set (their batches stay in it with the
    chosen samples' targets masked), so model selection never reads the samples the balancers steer by, and a task
    with few validation samples gives the slice at most half of them (at least one); with ``"valid"`` the
    early-stopping set is the whole split.
    """
    if slice_mode not in ("separate", "valid"):
        raise ValueError(f"loss.validation.slice must be 'separate' or 'valid', got {slice_mode!r}")
    held_by_batch = [_batch_task_samples(b) for b in batches]
    available: dict[int, set[int]] = {}
    for held in held_by_batch:
        for k, ids in held.items():
            available.setdefault(k, set()).update(ids)
    quota = {
        k: min(samples_per_task, len(ids) if slice_mode == "valid" else max(1, len(ids) // 2))
        for k, ids in available.items()
    }
    have: dict[int, int] = {k: 0 for k in available}
    slice_batches: list[Batch] = []
    rest: list[Batch] = []
    for batch, held in zip(batches, held_by_batch, strict=True):
        take: set[int] = set()
        for k, ids in sorted(held.items()):
            need = quota[k] - have[k]
            if need > 0:
                chosen = sorted(ids)[:need]
                take.update(chosen)
                have[k] += len(chosen)
        if not take:
            rest.append(batch)
            continue
        slice_batches.append(_keep_samples(batch, take, inside=True))
        if slice_mode == "valid":
            rest.append(batch)
        else:
            remainder = _keep_samples(batch, take, inside=False)
            if bool((remainder["targets"] != IGNORE_INDEX).any()):
                rest.append(remainder)
    if batches and not rest:
        raise ValueError(
            f"loss.validation.slice=separate: the validation split on this rank ({len(batches)} micro-batches, "
            f"samples per task {[len(available[k]) for k in sorted(available)]}) is too small to hold a balancer "
            "slice AND an early-stopping set; add validation records or use loss.validation.slice=valid"
        )
    return slice_batches, rest


@dataclass
class BalancerSlice:
    """The balancers' held-out slice, cached (moved to ``device`` once) and timed.

    ``valid_batches`` (None = all) micro-batches are evaluated per call, cycling through the slice in order, so
    the cost per update is bounded; the default evaluates the whole fixed slice, which gives the smoothest curves
    for the slope fits. ``seconds`` and ``calls`` measure what the extra forward passes cost.
    """

    batches: list[Batch]
    num_tasks: int
    valid_batches: int | None = None
    device: torch.device | None = None
    position: int = 0
    seconds: float = 0.0
    calls: int = 0
    _cached: list[Batch] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._cached = [
            {k: v.to(self.device) for k, v in b.items()} if self.device is not None else b
            for b in self.batches
        ]

    def next_batches(self) -> list[Batch]:
        if self.valid_batches is None or not self._cached:
            return self._cached
        n = len(self._cached)
        picked = [self._cached[(self.position + i) % n] for i in range(self.valid_batches)]
        self.position = (self.position + self.valid_batches) % n
        return picked

    def evaluate(
        self,
        token_losses: TokenLossFn,
        *,
        model: torch.nn.Module | None = None,
        process_group: dist.ProcessGroup | None = None,
    ) -> ValidationResult:
        result = evaluate_per_task(
            token_losses,
            self.next_batches(),
            self.num_tasks,
            model=model,
            process_group=process_group,
            device=self.device,
        )
        self.seconds += result.seconds
        self.calls += 1
        return result

    def state_dict(self) -> dict[str, float | int]:
        return {"position": self.position, "seconds": self.seconds, "calls": self.calls}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.position = int(state["position"])
        self.seconds = float(state["seconds"])
        self.calls = int(state["calls"])
