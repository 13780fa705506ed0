"""Bin packing, micro-batch collation (packed, padded, pretrain chunks) and the block-diagonal causal mask.

A packed row holds several samples ("segments"), isolated from one another. Three samples A (3 tokens), B (2) and
C (2) in a row of 8, `.` = padding, supervised tokens in capitals (a = prompt, A = answer):

    tokens        a0  a1  A2  b0  B1  c0  C1  .
    input_ids     a0  a1  A2  b0  B1  c0  C1  pad
    targets       a1  A2  -   B1  -   C1  -   -      (shifted: id of the NEXT token if that token is supervised,
                  (a1 is a prompt token: -100)        else -100; the last token of each segment: -100)
    position_ids  0   1   2   0   1   0   1   0      (restart per segment)
    segment_ids   1   1   1   2   2   3   3   0      (0 = padding)
    task_ids      kA  kA  kA  kB  kB  kC  kC  -1
    sample_ids    iA  iA  iA  iB  iB  iC  iC  -1

    block_causal_mask (query rows, key columns; 1 = may attend, stored as 0.0, else dtype min):
              a0 a1 A2 b0 B1 c0 C1 .
        a0  [ 1  .  .  .  .  .  .  . ]
        a1  [ 1  1  .  .  .  .  .  . ]
        A2  [ 1  1  1  .  .  .  .  . ]
        b0  [ .  .  .  1  .  .  .  . ]
        B1  [ .  .  .  1  1  .  .  . ]
        c0  [ .  .  .  .  .  1  .  . ]
        C1  [ .  .  .  .  .  1  1  . ]
        .   [ .  .  .  .  .  .  .  1 ]   (padding attends to itself only, so softmax has no NaN)

Restarting position ids isolate segments with sdpa or eager only while the model is called with no attention mask
and no cache (transformers then derives a per-sequence mask from them); any mask or cache in the call turns that off
and the segments see each other (docs/reference.md §7). TRL's packed rows rely on exactly that; we pass the
isolation explicitly: the 4-D additive mask (with eager, only the additive float form is right) or segment-wise
sdpa (model/attention.py). flash_attention_2 derives the segments from position_ids and takes no 4-D mask.

Padded mode puts one sample per row and pads to the longest row of the micro-batch, rounded up to a multiple of 8.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100
PAD_MULTIPLE = 8


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Pack items (by index) into bins of `capacity` with best-fit decreasing.

    Items are taken longest first (ties: lower index first); each goes into the open bin with the LEAST remaining room
    that still fits it (ties: the bin opened first), else a new bin. Written here because no maintained library
    offers BFD over integers this small; it is 20 lines.

    Args:
        lengths: the length of every item, each in (0, capacity].
        capacity: the room in one bin (the row's `seq_length`).

    Returns:
        Bins of item indices, in opening order, items in insertion order.

    Example::

        >>> best_fit_decreasing([5, 3, 4, 2], capacity=8)
        [[0, 1], [2, 3]]

        5 opens bin 0 (room 3); 4 does not fit there and opens bin 1 (room 4); 3 goes to the tightest bin it
        fits, bin 0 (room 3 -> 0); 2 to bin 1 (room 4 -> 2).

    Raises:
        ValueError: an item is empty or longer than `capacity`.
    """
    lengths = [int(x) for x in lengths]
    for i, n in enumerate(lengths):
        if n > capacity or n <= 0:
            raise ValueError(f"item {i} has length {n}; packing needs 0 < length <= capacity {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # (remaining room, bin index), kept sorted so bisect finds the tightest bin that fits.
    rooms: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        pos = bisect.bisect_left(rooms, (n, -1))
        if pos < len(rooms):
            room, b = rooms.pop(pos)
        else:
            b = len(bins)
            bins.append([])
            room = capacity
        bins[b].append(i)
        if room - n > 0:
            bisect.insort(rooms, (room - n, b))
    return bins


@dataclass(frozen=True)
class Segment:
    """One sample (or one chunk of concatenated samples) placed in a row."""

    input_ids: np.ndarray  # int, [n]
    loss_mask: np.ndarray  # bool, [n]: the token itself is supervised
    task_ids: np.ndarray  # int, [n]
    sample_ids: np.ndarray  # int, [n]

    def __len__(self) -> int:
        return len(self.input_ids)


def make_segment(input_ids: np.ndarray, loss_mask: np.ndarray, task_id: int, sample_id: int) -> Segment:
    """One sample as a `Segment`: its task and sample id repeated on every token.

    Args:
        input_ids: the sample's token ids `[n]`.
        loss_mask: `[n]`, True where the token itself is supervised (not shifted).
        task_id: the task's index in the dataset's task list.
        sample_id: the sample's index in the tokenized split (unique, so packed neighbours stay separate samples).
    """
    n = len(input_ids)
    return Segment(
        np.asarray(input_ids),
        np.asarray(loss_mask, dtype=bool),
        np.full(n, task_id, dtype=np.int64),
        np.full(n, sample_id, dtype=np.int64),
    )


def padded_length(longest: int, multiple: int = PAD_MULTIPLE) -> int:
    """The batch width for a longest row of `longest` tokens: rounded up to `multiple` (at least one multiple)."""
    return max(multiple, -(-longest // multiple) * multiple)


def collate_rows(rows: Sequence[Sequence[Segment]], pad_id: int, length: int | None = None) -> dict[str, torch.Tensor]:
    """A micro-batch of rows, each a list of segments laid side by side (the module docstring draws one row).

    Args:
        rows: B rows; each row's segments are placed left to right, then padding.
        pad_id: the token id of padding positions.
        length: the batch width L; default the longest row rounded up to a multiple of 8.

    Returns:
        `input_ids`, `targets` (the next token where it is supervised, else IGNORE_INDEX; never across a segment
        boundary), `position_ids` (restarting at 0 per segment), `segment_ids` (1, 2, ... per row, 0 = padding),
        `task_ids` and `sample_ids` (-1 on padding): int64 tensors of shape [B, L].

    Raises:
        ValueError: a row holds more than `length` tokens.
    """
    used = [sum(len(s) for s in row) for row in rows]
    width = length if length is not None else padded_length(max(used))
    if max(used) > width:
        raise ValueError(f"a row holds {max(used)} tokens, more than the batch width {width}")
    shape = (len(rows), width)
    input_ids = np.full(shape, pad_id, dtype=np.int64)
    targets = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    position_ids = np.zeros(shape, dtype=np.int64)
    segment_ids = np.zeros(shape, dtype=np.int64)
    task_ids = np.full(shape, -1, dtype=np.int64)
    sample_ids = np.full(shape, -1, dtype=np.int64)
    for b, row in enumerate(rows):
        pos = 0
        for s, seg in enumerate(row, start=1):
            n = len(seg)
            end = pos + n
            input_ids[b, pos:end] = seg.input_ids
            if n > 1:
                targets[b, pos : end - 1] = np.where(seg.loss_mask[1:], seg.input_ids[1:], IGNORE_INDEX)
            position_ids[b, pos:end] = np.arange(n)
            segment_ids[b, pos:end] = s
            task_ids[b, pos:end] = seg.task_ids
            sample_ids[b, pos:end] = seg.sample_ids
            pos = end
    return {
        "input_ids": torch.from_numpy(input_ids),
        "targets": torch.from_numpy(targets),
        "position_ids": torch.from_numpy(position_ids),
        "segment_ids": torch.from_numpy(segment_ids),
        "task_ids": torch.from_numpy(task_ids),
        "sample_ids": torch.from_numpy(sample_ids),
    }


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 4-D additive block-causal mask that isolates packed segments (drawn in the module docstring).

    Args:
        segment_ids: `[B, L]`, 1, 2, ... per segment, 0 on padding.
        dtype: the attention's compute dtype (the masked value is its most negative finite number).

    Returns:
        `[B, 1, L, L]`: 0 where the key is at or before the query in the same segment, `finfo(dtype).min`
        elsewhere; a padding position attends to itself only (so its softmax has no NaN).
    """
    b, length = segment_ids.shape
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = same & causal[None]
    pad = segment_ids == 0
    eye = torch.eye(length, dtype=torch.bool, device=segment_ids.device)[None]
    allowed = torch.where(pad[:, :, None], eye, allowed)
    mask = torch.zeros(b, 1, length, length, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


def segment_spans(segment_ids: torch.Tensor) -> tuple[tuple[int, int, int], ...]:
    """The attention blocks of a micro-batch: `(row, start, end)` for every run of equal `segment_ids` in a row.

    A padding run at the END of a row is merged into the segment before it: causal attention already keeps every
    real token of that segment from seeing the padding after it, and padding outputs carry no loss. Padding
    elsewhere (not produced by `collate_rows`) stays a span of its own. One host sync per micro-batch (the
    boundaries are read into Python once).

    Args:
        segment_ids: `[B, L]` as `collate_rows` makes it.

    Returns:
        The spans, row by row, left to right; causal attention within each span equals `block_causal_mask` on
        every real token.

    Example::

        segment_ids  row 0: 1 1 1 2 2 0      ->  (0, 0, 3), (0, 3, 6)
                     row 1: 1 1 1 1 0 0      ->  (1, 0, 6)
    """
    if segment_ids.ndim != 2:
        raise ValueError(f"segment_ids must be [B, L], got shape {tuple(segment_ids.shape)}")
    b, length = segment_ids.shape
    if length == 0:
        return ()
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    rows, cols = starts.nonzero(as_tuple=True)
    is_pad = segment_ids[rows, cols] == 0
    spans: list[tuple[int, int, int]] = []
    entries = list(zip(rows.tolist(), cols.tolist(), is_pad.tolist(), strict=True))
    for i, (row, start, pad) in enumerate(entries):
        last_in_row = i + 1 == len(entries) or entries[i + 1][0] != row
        end = length if last_in_row else entries[i + 1][1]
        if pad and last_in_row and spans and spans[-1][0] == row:
            spans[-1] = (row, spans[-1][1], end)
        else:
            spans.append((row, start, end))
    return tuple(spans)


@dataclass
class LengthReport:
    """Pad fraction of packing vs padding for a list of sample lengths (used by inspect and the benchmark)."""

    seq_length: int
    micro_batch_size: int
    packed_rows: int
    packed_pad_fraction: float
    padded_pad_fraction: float


def pad_fractions(lengths: np.ndarray, seq_length: int, micro_batch_size: int, seed: int = 0) -> LengthReport:
    """How much of the batch is padding with packing and without, for one split's sample lengths.

    Packed: BFD into `seq_length`, micro-batches of random rows, each as wide as its longest row rounded up to 8,
    as the stream does. Padded: one sample per row in random order, same width rule. Samples longer than
    `seq_length` are left out of both.

    Args:
        lengths: token count of every sample.
        seq_length: the packed row's capacity.
        micro_batch_size: rows per micro-batch.
        seed: the shuffle of rows and samples.

    Returns:
        A `LengthReport` with both pad fractions and the number of packed rows.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    lengths = lengths[lengths <= seq_length]
    rng = np.random.default_rng(seed)
    bins = best_fit_decreasing(lengths, seq_length)
    used = np.asarray([int(lengths[b].sum()) for b in bins])
    used = used[rng.permutation(len(used))]
    packed_positions = sum(
        padded_length(int(used[i : i + micro_batch_size].max())) * len(used[i : i + micro_batch_size])
        for i in range(0, len(used), micro_batch_size)
    )
    order = lengths[rng.permutation(len(lengths))]
    padded_positions = sum(
        padded_length(int(order[i : i + micro_batch_size].max())) * len(order[i : i + micro_batch_size])
        for i in range(0, len(order), micro_batch_size)
    )
    total = int(lengths.sum())
    return LengthReport(
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        packed_rows=len(bins),
        packed_pad_fraction=1 - total / packed_positions,
        padded_pad_fraction=1 - total / padded_positions,
    )
