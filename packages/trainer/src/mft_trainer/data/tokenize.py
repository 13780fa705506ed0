"""Tokenize prepared records into (ids, loss mask) arrays, applying the over-long policy and counting every outcome.

Work is split into units (a shard's row range) tokenized with one batched tokenizer call each; `cache.py` runs units in
worker processes and assembles the results. Every record ends in exactly one outcome, counted per task:

- `kept`; `truncated` (cut after the last whole round that fits); `eos_cut` (truncate mode, the first answer does
  not fit: kept up to seq_length, the answer's start trained, its EOS lost: counted, never silent);
- `dropped_overlong` (drop mode); `dropped_prompt_too_long` (truncate mode, no supervised token fits);
- `no_supervised` (no supervised token that can be a target, i.e. none after position 0);
- `invalid` (the template rejected the record; the first reasons are kept with the record id).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mft_trainer.config.template import TemplateConfig
from mft_trainer.data.template import EncodedSample, TemplateError, encode_batch, encode_text_batch

OUTCOMES = (
    "kept",
    "truncated",
    "eos_cut",
    "dropped_overlong",
    "dropped_prompt_too_long",
    "no_supervised",
    "invalid",
)
MAX_REASONS = 20


@dataclass(frozen=True)
class Unit:
    """Rows [start, stop) of one shard, all of task `task_id`."""

    shard: str
    start: int
    stop: int
    task_id: int
    kind: str  # "chat" | "text"


@dataclass
class UnitResult:
    input_ids: np.ndarray  # int32, concatenated kept samples
    loss_mask: np.ndarray  # uint8
    lengths: np.ndarray  # int64 per kept sample
    counts: Counter = field(default_factory=Counter)
    boundary_straddles: int = 0
    reasons: list[str] = field(default_factory=list)


def fit_to_length(sample: EncodedSample, seq_length: int | None, overlong: str) -> tuple[int, str]:
    """How many leading tokens to keep, and the outcome. seq_length None keeps everything (pretrain chunks)."""
    n = len(sample.input_ids)
    supervised_targets = np.flatnonzero(sample.loss_mask[1:])
    if len(supervised_targets) == 0:
        return 0, "no_supervised"
    if seq_length is None or n <= seq_length:
        return n, "kept"
    if overlong == "drop":
        return 0, "dropped_overlong"
    fitting = [end for end in sample.turn_ends if end <= seq_length]
    if fitting and sample.loss_mask[1 : fitting[-1]].any():
        return fitting[-1], "truncated"
    if sample.loss_mask[1:seq_length].any():
        return seq_length, "eos_cut"
    return 0, "dropped_prompt_too_long"


def read_rows(unit: Unit) -> list[dict[str, Any]]:
    with pa.memory_map(unit.shard, "r") as source:
        try:
            table = pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            table = pa.ipc.open_stream(source).read_all()
    return table.slice(unit.start, unit.stop - unit.start).select(["id", "messages"]).to_pylist()


def tokenize_unit(
    unit: Unit, tokenizer: Any, template_cfg: TemplateConfig, seq_length: int | None, overlong: str
) -> UnitResult:
    rows = read_rows(unit)
    if unit.kind == "text":
        encoded: list[EncodedSample | TemplateError] = []
        texts, bad = [], {}
        for i, row in enumerate(rows):
            msgs = row["messages"] or []
            if len(msgs) != 1 or msgs[0].get("role") != "assistant":
                bad[i] = TemplateError("a text record must hold exactly one assistant turn with the raw text")
            else:
                texts.append(msgs[0]["content"])
        good = iter(encode_text_batch(texts, tokenizer))
        encoded = [bad[i] if i in bad else next(good) for i in range(len(rows))]
    else:
        encoded = encode_batch([row["messages"] or [] for row in rows], tokenizer, template_cfg)
    counts: Counter = Counter()
    reasons: list[str] = []
    ids_parts, mask_parts, lengths = [], [], []
    straddles = 0
    for row, enc in zip(rows, encoded, strict=True):
        if isinstance(enc, TemplateError):
            counts["invalid"] += 1
            if len(reasons) < MAX_REASONS:
                reasons.append(f"{row['id']}: {enc}")
            continue
        keep, outcome = fit_to_length(enc, seq_length, overlong)
        counts[outcome] += 1
        if keep == 0:
            continue
        straddles += enc.boundary_straddles
        ids_parts.append(enc.input_ids[:keep])
        mask_parts.append(enc.loss_mask[:keep])
        lengths.append(keep)
    return UnitResult(
        input_ids=np.concatenate(ids_parts).astype(np.int32) if ids_parts else np.zeros(0, np.int32),
        loss_mask=np.concatenate(mask_parts).astype(np.uint8) if mask_parts else np.zeros(0, np.uint8),
        lengths=np.asarray(lengths, dtype=np.int64),
        counts=counts,
        boundary_straddles=straddles,
        reasons=reasons,
    )
