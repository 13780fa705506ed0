"""Resumable checkpoints (`output_dir/checkpoints/step-N/`) and the final model (`output_dir/final/`, Contract 2).

A checkpoint is written under a temporary name (`checkpoints/.tmp-step-N`) and renamed to `step-N` only when every
rank has finished writing, so a crash never leaves a `step-N` that looks complete; `resume: auto` picks the highest
`step-N` holding `meta.json` (written last). Layout:

    step-N/
      model/                HF weights or PEFT adapter + tokenizer with its chat template (readable on its own)
      trainer_state.pt      full trainable weights, optimizer (keyed by parameter name), scheduler   [torch backends]
      deepspeed/            the engine's own sharded checkpoint (weights, optimizer, scheduler)     [deepspeed]
      rank-R.pt             per-rank RNG states (python, numpy, torch[, cuda]) and the data stream state
      meta.json             step, world size, backend, balancer state and loop counters; written last
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
FINAL = "final"
_STEP_RE = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step}"


def temp_dir_for(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"{_TMP_PREFIX}step-{step}"


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_RE.match(child.name)
            if match and child.is_dir() and (child / "meta.json").is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def remove_stale_temps(output_dir: Path) -> None:
    """Half-written checkpoints from a crashed run (rank 0 only)."""
    root = Path(output_dir) / CHECKPOINTS
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(_TMP_PREFIX):
                shutil.rmtree(child, ignore_errors=True)


def write_rank_state(tmp: Path, rank: int, data_state: Any) -> None:
    torch.save({"rng": rng_state(), "data": data_state}, tmp / f"rank-{rank}.pt")


def read_rank_state(ckpt: Path, rank: int) -> dict[str, Any]:
    path = ckpt / f"rank-{rank}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no state for rank {rank}; resume with the same number of processes that wrote the checkpoint"
        )
    # weights_only=False: the file holds Python/numpy RNG tuples that the safe loader rejects; we wrote it ourselves.
    return torch.load(path, map_location="cpu", weights_only=False)


def write_meta(tmp: Path, meta: dict[str, Any]) -> None:
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")


def read_meta(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))


def publish(output_dir: Path, step: int, keep_last: int) -> Path:
    """Rename the finished temp dir to step-N and delete all but the newest `keep_last` checkpoints (rank 0)."""
    tmp, final = temp_dir_for(output_dir, step), checkpoint_dir(output_dir, step)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for _, old in complete_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_resume(resume: str | Path, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: `never` -> None, `auto` -> latest complete or None, a path -> that path."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"resume: {path} is not a complete checkpoint (no meta.json)")
    return path


def write_train_record(final_dir: Path, record: dict[str, Any]) -> None:
    """`mft_train.json` beside the final model (Contract 2), written to a temp name then renamed."""
    tmp = final_dir / "mft_train.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str), encoding="utf-8")
    tmp.rename(final_dir / "mft_train.json")
