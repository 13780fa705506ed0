"""Rows from samples: a packed bin (best-fit decreasing into seq_length), one padded sample, or a pretrain chunk.

`RowBuilder` turns an epoch's ordered sample indices into rows and rows into micro-batches (`packing.collate_rows`);
`StreamStats` counts what the stream produced (tokens, padding, and the samples dropped, truncated or without a
supervised token) for the run summary and `mft_train.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mft_trainer.data.cache import TokenizedSplit
from mft_trainer.data.packing import Segment, best_fit_decreasing, collate_rows, make_segment

Batch = dict[str, torch.Tensor]


@dataclass
class StreamStats:
    """What the stream served so far plus what tokenization kept, dropped and cut (per outcome, summed over tasks)."""

    outcomes: dict[str, int]
    boundary_straddles: int = 0
    rows: int = 0
    positions: int = 0
    tokens: int = 0
    supervised_tokens: int = 0

    @property
    def pad_fraction(self) -> float:
        return 1.0 - self.tokens / self.positions if self.positions else 0.0

    @property
    def dropped(self) -> int:
        o = self.outcomes
        return o.get("dropped_overlong", 0) + o.get("dropped_prompt_too_long", 0)

    @property
    def truncated(self) -> int:
        return self.outcomes.get("truncated", 0) + self.outcomes.get("eos_cut", 0)

    @property
    def no_supervised(self) -> int:
        return self.outcomes.get("no_supervised", 0)

    def update(self, batch: Batch) -> None:
        seg = batch["segment_ids"]
        self.rows += int(seg.shape[0])
        self.positions += int(seg.numel())
        self.tokens += int((seg != 0).sum())
        self.supervised_tokens += int((batch["targets"] != -100).sum())

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.outcomes,
            "dropped": self.dropped,
            "truncated_total": self.truncated,
            "boundary_straddles": self.boundary_straddles,
            "rows": self.rows,
            "positions": self.positions,
            "tokens": self.tokens,
            "supervised_tokens": self.supervised_tokens,
            "pad_fraction": self.pad_fraction,
        }


def pad_id_of(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither pad_token nor eos_token")
    return int(pad)


class RowBuilder:
    """Turns an ordered list of sample indices into rows and rows into micro-batches."""

    def __init__(self, split: TokenizedSplit, *, seq_length: int, layout: str, pad_id: int, pack_window: int | None):
        if layout not in ("packed", "padded", "pretrain"):
            raise ValueError(f"unknown layout {layout!r}")
        self.split = split
        self.seq_length = int(seq_length)
        self.layout = layout
        self.pad_id = pad_id
        self.pack_window = pack_window
        if layout != "pretrain" and len(split) and int(split.lengths.max()) > seq_length:
            raise ValueError(
                f"tokenized split {split.path} holds a sample of {int(split.lengths.max())} tokens > seq_length "
                f"{seq_length}; the cache key includes seq_length, so this entry was built for another mode"
            )

    def rows(self, order: np.ndarray, rng: np.random.Generator | None) -> list[Any]:
        """Rows for samples in `order`: lists of sample ids (packed/padded) or (start, stop, order) (pretrain)."""
        lengths = self.split.lengths[order]
        if self.layout == "padded":
            return [[int(i)] for i in order]
        if self.layout == "pretrain":
            total = int(lengths.sum())
            return [(a, min(a + self.seq_length, total)) for a in range(0, total, self.seq_length)]
        window = self.pack_window or len(order)
        rows: list[Any] = []
        for w in range(0, len(order), window):
            chunk = order[w : w + window]
            for b in best_fit_decreasing(lengths[w : w + window], self.seq_length):
                rows.append([int(chunk[j]) for j in b])
        if rng is not None:
            rows = [rows[k] for k in rng.permutation(len(rows))]
        return rows

    def segments(self, row: Any, order: np.ndarray | None = None, cum: np.ndarray | None = None) -> list[Segment]:
        split = self.split
        if self.layout != "pretrain":
            out = []
            for i in row:
                ids, mask = split.sample(i)
                out.append(make_segment(ids, mask, int(split.task_ids[i]), i))
            return out
        assert order is not None and cum is not None
        start, stop = row
        first = int(np.searchsorted(cum, start, side="right")) - 1
        ids, mask, tasks, samples = [], [], [], []
        k = first
        while k < len(order) and cum[k] < stop:
            i = int(order[k])
            s_ids, s_mask = split.sample(i)
            a, b = max(start, int(cum[k])) - int(cum[k]), min(stop, int(cum[k + 1])) - int(cum[k])
            ids.append(s_ids[a:b])
            mask.append(s_mask[a:b])
            tasks.append(np.full(b - a, int(split.task_ids[i]), dtype=np.int64))
            samples.append(np.full(b - a, i, dtype=np.int64))
            k += 1
        return [Segment(np.concatenate(ids), np.concatenate(mask), np.concatenate(tasks), np.concatenate(samples))]

    def collate(self, rows: list[list[Segment]]) -> Batch:
        return collate_rows(rows, self.pad_id)
