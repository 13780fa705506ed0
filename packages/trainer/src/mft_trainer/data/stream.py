"""The training stream and evaluation batches: tokenized cache -> global sampler -> rows -> micro-batches.

A ROW is what fills one line of a micro-batch: in packed mode a bin of samples (best-fit decreasing into seq_length),
in padded mode one sample, in pretrain mode a seq_length chunk of the epoch's samples concatenated (each ends in EOS).
Rows are numbered globally and continue across epochs (epoch e+1's rows follow epoch e's; nothing is dropped at an
epoch end). Optimizer step s uses global rows [s*G, (s+1)*G), G = micro_batch_size * grad_accum * world_size; rank r
takes the r-th block of micro_batch_size * grad_accum rows of the step and cuts it into grad_accum micro-batches:

    step s rows:  | rank 0: mb0 mb1 ... | rank 1: mb0 mb1 ... | ...     (each mb = micro_batch_size rows)

so the rows of a step are the same however G is split over ranks and accumulation, and every row (so every sample of
an epoch) goes to exactly one rank. Everything is a pure function of (seed, epoch), so the stream state is just the
number of rows consumed: resume recomputes the same rows.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from mft_trainer.config.data import DataConfig
from mft_trainer.config.template import TemplateConfig
from mft_trainer.data.cache import TokenizedSplit, load_or_build
from mft_trainer.data.dataset import open_prepared
from mft_trainer.data.packing import Segment
from mft_trainer.data.rows import RowBuilder, StreamStats, pad_id_of
from mft_trainer.data.sampler import GlobalSampler, task_weights
from mft_trainer.data.template import validate_template

Batch = dict[str, torch.Tensor]


class BatchStream:
    """Micro-batches of THIS rank, step by step. See the module docstring for the global step definition."""

    def __init__(
        self,
        split: TokenizedSplit,
        sampler: GlobalSampler,
        *,
        seq_length: int,
        layout: str,
        micro_batch_size: int,
        grad_accum: int,
        rank: int,
        world_size: int,
        seed: int,
        pad_id: int,
        pack_window: int | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if micro_batch_size < 1 or grad_accum < 1:
            raise ValueError("micro_batch_size and grad_accum must be >= 1")
        self.split = split
        self.sampler = sampler
        self.builder = RowBuilder(split, seq_length=seq_length, layout=layout, pad_id=pad_id, pack_window=pack_window)
        self.layout = layout
        self.micro_batch_size = micro_batch_size
        self.grad_accum = grad_accum
        self.rank = rank
        self.world_size = world_size
        self.seed = int(seed)
        self.rows_per_step = micro_batch_size * grad_accum * world_size
        self.rows_consumed = 0
        self._epoch_starts: list[int] = [0]  # first global row of each epoch computed so far
        self._epochs: OrderedDict[int, tuple[list[Any], np.ndarray, np.ndarray]] = OrderedDict()
        self.stats = StreamStats(outcomes=split.totals(), boundary_straddles=int(split.meta["boundary_straddles"]))

    # --- epochs and global rows -------------------------------------------------------------------------------
    def _epoch(self, e: int) -> tuple[list[Any], np.ndarray, np.ndarray]:
        if e not in self._epochs:
            order = self.sampler.epoch_order(e)
            rng = np.random.default_rng([self.seed, e, 0xB1A5])
            rows = self.builder.rows(order, rng)
            cum = np.concatenate([[0], np.cumsum(self.split.lengths[order])]).astype(np.int64)
            self._epochs[e] = (rows, order, cum)
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[e]

    def _locate(self, g: int) -> tuple[int, int]:
        """(epoch, row within epoch) of global row g."""
        while self._epoch_starts[-1] <= g:
            e = len(self._epoch_starts) - 1
            n = len(self._epoch(e)[0])
            if n == 0:
                raise ValueError("an epoch produced no rows: the train split is empty after tokenization")
            self._epoch_starts.append(self._epoch_starts[-1] + n)
        e = int(np.searchsorted(self._epoch_starts, g, side="right")) - 1
        return e, g - self._epoch_starts[e]

    def row_segments(self, g: int) -> list[Segment]:
        """Segments of global row g (the same on every rank)."""
        e, j = self._locate(g)
        rows, order, cum = self._epoch(e)
        return self.builder.segments(rows[j], order, cum)

    @property
    def epoch(self) -> int:
        """The epoch of the next row to be served."""
        return self._locate(self.rows_consumed)[0]

    def step_rows(self, step: int, rank: int | None = None) -> list[int]:
        """Global row indices of optimizer step `step` for `rank` (default: this rank), in micro-batch order."""
        r = self.rank if rank is None else rank
        per_rank = self.micro_batch_size * self.grad_accum
        first = step * self.rows_per_step + r * per_rank
        return list(range(first, first + per_rank))

    # --- iteration --------------------------------------------------------------------------------------------
    def next_step(self) -> list[Batch]:
        """The grad_accum micro-batches of this rank for the next optimizer step."""
        step = self.rows_consumed // self.rows_per_step
        if self.rows_consumed % self.rows_per_step:
            raise RuntimeError("stream position is not at a step boundary; restore it with load_state_dict")
        rows = self.step_rows(step)
        batches = []
        for m in range(self.grad_accum):
            chunk = rows[m * self.micro_batch_size : (m + 1) * self.micro_batch_size]
            batch = self.builder.collate([self.row_segments(g) for g in chunk])
            self.stats.update(batch)
            batches.append(batch)
        self.rows_consumed += self.rows_per_step
        return batches

    def __iter__(self):
        while True:
            yield from self.next_step()

    @property
    def step(self) -> int:
        return self.rows_consumed // self.rows_per_step

    def rows_per_epoch(self, epoch: int = 0) -> int:
        return len(self._epoch(epoch)[0])

    def steps_per_epoch(self, epoch: int = 0) -> float:
        return self.rows_per_epoch(epoch) / self.rows_per_step

    def state_dict(self) -> dict[str, Any]:
        return {
            "rows_consumed": self.rows_consumed,
            "rows_per_step": self.rows_per_step,
            "seed": self.seed,
            "cache_key": self.split.key,
            "layout": self.layout,
            "stats": {k: getattr(self.stats, k) for k in ("rows", "positions", "tokens", "supervised_tokens")},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("cache_key") != self.split.key or state.get("seed") != self.seed:
            raise ValueError(
                "stream state is from another dataset/tokenizer/template/seed (cache key "
                f"{state.get('cache_key')} seed {state.get('seed')}, now {self.split.key} seed {self.seed})"
            )
        if state.get("layout") != self.layout:
            raise ValueError(f"stream state has layout {state.get('layout')}, this stream {self.layout}")
        self.rows_consumed = int(state["rows_consumed"])
        for k, v in state.get("stats", {}).items():
            setattr(self.stats, k, int(v))

    def summary(self) -> dict[str, Any]:
        """Per-task samples, tokens, weights and epoch quotas, plus rows/steps per epoch (for --dry-run)."""
        offsets, sizes = self.split.task_offsets_sizes()
        lengths = self.split.lengths
        tokens = [int(lengths[o : o + s].sum()) for o, s in zip(offsets, sizes, strict=True)]
        return {
            "tasks": {
                name: {
                    "samples": int(sizes[k]),
                    "tokens": tokens[k],
                    "weight": float(self.sampler.weights[k]),
                    "samples_per_epoch": int(self.sampler.quotas[k]),
                    "outcomes": self.split.counts[name],
                }
                for k, name in enumerate(self.split.tasks)
            },
            "rows_per_epoch": self.rows_per_epoch(0),
            "rows_per_step": self.rows_per_step,
            "steps_per_epoch": self.steps_per_epoch(0),
            "cache": {"path": str(self.split.path), "loaded": self.split.loaded_from_cache, "seconds": self.split.seconds},
        }


def _layout(packing: bool, mode: str) -> str:
    if mode == "pretrain":
        return "pretrain"
    return "packed" if packing else "padded"


def tokenized_split(
    data_cfg: DataConfig, template_cfg: TemplateConfig, tokenizer: Any, split: str, seq_length: int,
    mode: str = "sft",
) -> TokenizedSplit:
    """Open the prepared dataset and load (or build) the tokenized cache entry of `split`.

    Under torchrun every rank may call this at once (each builds in its own temp dir, the first rename wins); to build
    once, call it on rank 0 first, then barrier, then build the streams."""
    validate_template(tokenizer, template_cfg)
    dataset = open_prepared(data_cfg.path)
    return load_or_build(
        dataset,
        split,
        tokenizer,
        template_cfg,
        seq_length=seq_length,
        overlong=data_cfg.overlong,
        mode=mode,
        cache_dir=data_cfg.cache_dir,
        num_workers=data_cfg.resolved_num_workers(),
    )


def build_train_stream(
    data_cfg: DataConfig,
    template_cfg: TemplateConfig,
    tokenizer: Any,
    *,
    seq_length: int,
    packing: bool,
    micro_batch_size: int,
    grad_accum: int,
    rank: int,
    world_size: int,
    seed: int,
    mode: str = "sft",
) -> BatchStream:
    """The training stream of one rank: which rows each optimizer step trains on, resumable.

    Args:
        data_cfg, template_cfg: the `data:` and `template:` sections.
        tokenizer: the model's tokenizer.
        seq_length: the row width; packed rows hold several samples up to it.
        packing: True packs samples into rows (BFD), False puts one sample per row.
        micro_batch_size, grad_accum: rows per micro-batch and micro-batches per optimizer step on this rank.
        rank, world_size: this rank's share; optimizer step s uses global rows [s*G, (s+1)*G), G = micro_batch_size *
            grad_accum * world_size, so a step trains on the same rows for any split over ranks and accumulation.
        seed: the sampler's seed (a fresh order every epoch from it).
        mode: `sft` or `pretrain` (concatenate with EOS and chunk into rows).

    Returns:
        A `BatchStream`: `next_step()` gives this rank's micro-batches (`data.packing.collate_rows` layout),
        `state_dict()` / `load_state_dict()` resume it exactly.

    Raises:
        ValueError: the train split holds no trainable sample.
    """
    split = tokenized_split(data_cfg, template_cfg, tokenizer, "train", seq_length, mode)
    if len(split) == 0:
        raise ValueError(f"{data_cfg.path}: no trainable sample in the train split; outcomes {split.totals()}")
    offsets, sizes = split.task_offsets_sizes()
    weights = task_weights(sizes, data_cfg.task_sampling, task_names=split.tasks, temperature=data_cfg.temperature)
    sampler = GlobalSampler(offsets, sizes, weights, seed, epoch_size=data_cfg.epoch_size)
    return BatchStream(
        split,
        sampler,
        seq_length=seq_length,
        layout=_layout(packing, mode),
        micro_batch_size=micro_batch_size,
        grad_accum=grad_accum,
        rank=rank,
        world_size=world_size,
        seed=seed,
        pad_id=pad_id_of(tokenizer),
        pack_window=data_cfg.pack_window,
    )


def build_eval_batches(
    data_cfg: DataConfig,
    template_cfg: TemplateConfig,
    tokenizer: Any,
    *,
    split: str = "valid",
    seq_length: int,
    micro_batch_size: int,
    packing: bool,
    rank: int = 0,
    world_size: int = 1,
    mode: str = "sft",
) -> list[Batch]:
    """Deterministic evaluation micro-batches for `rank`: rows in a fixed order, row j goes to rank j % world_size,
    so every sample is evaluated exactly once across ranks (a rank may get one batch fewer than another)."""
    tok = tokenized_split(data_cfg, template_cfg, tokenizer, split, seq_length, mode)
    if len(tok) == 0:
        return []
    builder = RowBuilder(
        tok, seq_length=seq_length, layout=_layout(packing, mode), pad_id=pad_id_of(tokenizer), pack_window=None
    )
    order = np.arange(len(tok), dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(tok.lengths)]).astype(np.int64)
    rows = builder.rows(order, rng=None)[rank::world_size]
    return [
        builder.collate([builder.segments(r, order, cum) for r in rows[i : i + micro_batch_size]])
        for i in range(0, len(rows), micro_batch_size)
    ]


__all__ = [
    "Batch",
    "BatchStream",
    "StreamStats",
    "build_eval_batches",
    "build_train_stream",
    "tokenized_split",
]
