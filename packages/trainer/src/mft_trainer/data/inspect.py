"""Text rendering for `mft-train inspect`: a sample with its supervised tokens marked, and a packed batch's layout.

Plain text marks supervised runs as `[[...]]`; in a terminal (`color=True`) they are green. The batch layout lists,
per row, each segment's span, length, position ids, task and supervised-token count, and the pad fraction, e.g.

    row 0  width 512  used 498  pad 2.7%
      seg  start  len  positions  task     sample  supervised
      1        0  301  0..300     code-a       17         212
      2      301  197  0..196     chat-c       60          88
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SUPERVISED_OPEN = "[["
SUPERVISED_CLOSE = "]]"
_GREEN = "\x1b[30;42m"
_RESET = "\x1b[0m"


def supervised_runs(input_ids: np.ndarray, loss_mask: np.ndarray) -> list[tuple[bool, list[int]]]:
    """Consecutive tokens with the same mask value, in order: [(supervised, ids), ...]."""
    runs: list[tuple[bool, list[int]]] = []
    for tok, m in zip(np.asarray(input_ids).tolist(), np.asarray(loss_mask, dtype=bool).tolist(), strict=True):
        if runs and runs[-1][0] == m:
            runs[-1][1].append(tok)
        else:
            runs.append((m, [tok]))
    return runs


def render_sample(input_ids: Any, loss_mask: Any, tokenizer: Any, *, color: bool = False) -> str:
    """The decoded sample, supervised tokens marked (`[[...]]`, or green when color)."""
    parts = []
    for sup, ids in supervised_runs(np.asarray(input_ids), np.asarray(loss_mask)):
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if not sup:
            parts.append(text)
        elif color:
            parts.append(_GREEN + text + _RESET)
        else:
            parts.append(SUPERVISED_OPEN + text + SUPERVISED_CLOSE)
    return "".join(parts)


def render_batch_layout(batch: dict[str, torch.Tensor], task_names: list[str]) -> str:
    """Per row: segments (start, length, position ids, task, sample id, supervised targets) and pad fraction."""
    seg_ids = batch["segment_ids"]
    lines = []
    for b in range(seg_ids.shape[0]):
        seg = seg_ids[b]
        width = int(seg.numel())
        used = int((seg != 0).sum())
        lines.append(f"row {b}  width {width}  used {used}  pad {100 * (1 - used / width):.1f}%")
        lines.append("  seg  start   len  positions    task                  sample  supervised")
        for s in sorted(set(seg.tolist()) - {0}):
            idx = (seg == s).nonzero().flatten()
            a, n = int(idx[0]), int(idx.numel())
            pos = batch["position_ids"][b, idx]
            tasks = sorted(set(batch["task_ids"][b, idx].tolist()))
            task = ",".join(task_names[t] if 0 <= t < len(task_names) else str(t) for t in tasks)
            samples = sorted(set(batch["sample_ids"][b, idx].tolist()))
            sample = str(samples[0]) if len(samples) == 1 else f"{len(samples)} samples"
            sup = int((batch["targets"][b, idx] != -100).sum())
            lines.append(
                f"  {s:>3}  {a:>5}  {n:>4}  {int(pos[0])}..{int(pos[-1]):<8}  {task:<20}  {sample:>6}  {sup:>10}"
            )
    total = seg_ids.numel()
    pad = int((seg_ids == 0).sum())
    lines.append(f"batch: {seg_ids.shape[0]} rows x {seg_ids.shape[1]}, pad fraction {pad / max(1, total):.2%}")
    return "\n".join(lines)


def render_row_strip(batch: dict[str, torch.Tensor], row: int = 0, start: int = 0, count: int = 24) -> str:
    """The first `count` positions of a row from `start`, drawn like the packing docstring (one column per token)."""
    keys = ("input_ids", "targets", "position_ids", "segment_ids", "task_ids", "sample_ids")
    sl = slice(start, start + count)
    cols = {k: [str(v) for v in batch[k][row, sl].tolist()] for k in keys}
    width = max(len(v) for vals in cols.values() for v in vals)
    return "\n".join(f"{k:<13}" + " ".join(v.rjust(width) for v in cols[k]) for k in keys)


def inspect_report(
    data_cfg: Any,
    template_cfg: Any,
    tokenizer: Any,
    *,
    seq_length: int,
    packing: bool,
    micro_batch_size: int,
    task: str | None = None,
    n: int = 2,
    color: bool = False,
    seed: int = 0,
    mode: str = "sft",
) -> str:
    """Everything `mft-train inspect` prints: n rendered samples (of `task`, else of every task), the outcome counts,
    and the layout of the first training micro-batch with its pad fraction."""
    from mft_trainer.data.stream import build_train_stream

    stream = build_train_stream(
        data_cfg,
        template_cfg,
        tokenizer,
        seq_length=seq_length,
        packing=packing,
        micro_batch_size=micro_batch_size,
        grad_accum=1,
        rank=0,
        world_size=1,
        seed=seed,
        mode=mode,
    )
    split = stream.split
    if task is not None and task not in split.tasks:
        raise ValueError(f"--task {task!r} is not a task of {data_cfg.path}; tasks are {split.tasks}")
    offsets, sizes = split.task_offsets_sizes()
    out = []
    for k, name in enumerate(split.tasks):
        if task is not None and name != task:
            continue
        outcomes = ", ".join(f"{o} {c}" for o, c in split.counts[name].items() if c)
        out.append(f"=== task {name}: {int(sizes[k])} samples ({outcomes})")
        for i in range(int(offsets[k]), int(offsets[k]) + min(n, int(sizes[k]))):
            ids, mask = split.sample(i)
            out.append(f"--- sample {i}: {len(ids)} tokens, {int(mask.sum())} supervised")
            out.append(render_sample(ids, mask, tokenizer, color=color))
    batch = stream.next_step()[0]
    out.append(f"=== first micro-batch ({stream.layout})")
    out.append(render_batch_layout(batch, split.tasks))
    out.append(render_row_strip(batch))
    if stream.layout != "pretrain":
        from mft_trainer.data.packing import pad_fractions

        rep = pad_fractions(np.asarray(split.lengths), seq_length, micro_batch_size, seed=seed)
        out.append(
            f"=== whole train split at seq_length {seq_length}, micro_batch_size {micro_batch_size}: pad fraction "
            f"packed {rep.packed_pad_fraction:.2%} ({rep.packed_rows} rows), padded {rep.padded_pad_fraction:.2%}"
        )
    return "\n".join(out)


def inspect(cfg: Any, *, task: str | None = None, n: int = 2, console: Any = None, plain: bool = False) -> str:
    """`mft-train inspect`: load the tokenizer of a TrainConfig, build the report, print it on `console` (rich)."""
    from mft_trainer.model.build import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    text = inspect_report(
        cfg.data,
        cfg.template,
        tokenizer,
        seq_length=cfg.seq_length,
        packing=cfg.packing,
        micro_batch_size=cfg.micro_batch_size,
        task=task,
        n=n,
        color=not plain,
        seed=cfg.seed,
        mode=cfg.mode,
    )
    if console is not None:
        from rich.text import Text

        console.print(Text(text) if plain else Text.from_ansi(text), highlight=False, markup=False, soft_wrap=True)
    return text
