"""Everything that writes or restores a checkpoint: `checkpoints/step-N/`, `best/`, `final/` and `mft_train.json`.

`final/` and `best/` are Contract 2 directories (model or adapter, tokenizer with the training chat template,
`mft_train.json`), each replaced atomically. Resumable checkpoints:

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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mft_trainer.atomic import atomic_directory, write_json
from mft_trainer.config import TrainConfig
from mft_trainer.distributed import Backend, DistEnv, barrier
from mft_trainer.model.save import save_pretrained_with_template

if TYPE_CHECKING:
    from mft_trainer.loss.controller import StepReport

CHECKPOINTS = "checkpoints"
FINAL = "final"
BEST = "best"  # output_dir/best/: the model at the best validation metric (Contract 2 layout, like final/)
TRAIN_RECORD = "mft_train.json"
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
    write_json(tmp / "meta.json", meta)


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


def finite_or_none(value: float) -> float | None:
    """NaN (a task absent from a step, no best yet) as None, for strict JSON."""
    return None if value != value else float(value)


def save_checkpoint(
    cfg: TrainConfig, backend: Backend, stream: Any, tokenizer: Any, env: DistEnv, step: int,
    balancer_state: dict[str, Any],
) -> Path:
    """Write checkpoints/step-N atomically (temp dir, then rename once every rank is done)."""
    output_dir = Path(cfg.output_dir)
    tmp = temp_dir_for(output_dir, step)
    if env.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(env)
    states = backend.state_dicts()  # collective: gathers full tensors to rank 0
    backend.save_native(tmp / "deepspeed")  # collective for DeepSpeed, nothing for torch backends
    with backend.gathered_model() as full:
        if env.is_main:
            save_pretrained_with_template(full, tokenizer, cfg.template, tmp / "model")
    if env.is_main and states:
        torch.save(states, tmp / "trainer_state.pt")
    write_rank_state(tmp, env.rank, stream.state_dict())
    barrier(env)
    final = checkpoint_dir(output_dir, step)
    if env.is_main:
        write_meta(tmp, {
            "step": step, "world_size": env.world_size, "backend": env.backend,
            "balancer_state": balancer_state, "config": cfg.to_yaml_dict(),
        })
        publish(output_dir, step, cfg.keep_last)
    barrier(env)
    return final


def restore(path: Path, backend: Backend, stream: Any, env: DistEnv) -> tuple[int, dict[str, Any]]:
    meta = read_meta(path)
    if meta["world_size"] != env.world_size or meta["backend"] != env.backend:
        raise RuntimeError(
            f"resume: {path} was written by {meta['world_size']} process(es) with backend {meta['backend']!r}; "
            f"this run has {env.world_size} with {env.backend!r}. Resume with the same launch, or resume: never."
        )
    if env.backend == "deepspeed":
        backend.load_native(path / "deepspeed")
    else:
        # Every rank reads the full state (a shared filesystem, as for writing) and keeps its own shard of it.
        states = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
        backend.load_state_dicts(states)
    rank_state = read_rank_state(path, env.rank)
    stream.load_state_dict(rank_state["data"])
    set_rng_state(rank_state["rng"])
    barrier(env)
    return int(meta["step"]), dict(meta.get("balancer_state") or {})


def save_best(
    backend: Backend, tokenizer: Any, cfg: TrainConfig, env: DistEnv, report: StepReport, record_base: dict[str, Any]
) -> None:
    """`output_dir/best/`: the model at the best validation metric so far (Contract 2, replaced atomically).

    Collective (the model is gathered on sharded backends): every rank calls it, at the same steps, since the
    decision comes from all-reduced validation losses.
    """
    m = report.metrics
    record = {
        **record_base,
        "step": report.step,
        "valid_metric": {"name": cfg.loss.early_stopping.metric, "value": finite_or_none(m["valid_metric"])},
        "valid_loss_per_task": {t: finite_or_none(m[f"valid_loss/{t}"]) for t in record_base["tasks"]},
    }
    save_final(backend, tokenizer, cfg, env, Path(cfg.output_dir) / BEST, record)


def save_final(
    backend: Backend, tokenizer: Any, cfg: TrainConfig, env: DistEnv, final_dir: Path, record: dict[str, Any]
) -> None:
    """`output_dir/final/` (Contract 2): model or adapter, tokenizer with chat template, mft_train.json; replaced
    atomically. Collective like `save_best`."""
    with backend.gathered_model() as full:
        if env.is_main:
            with atomic_directory(final_dir) as tmp:
                save_pretrained_with_template(full, tokenizer, cfg.template, tmp)
                write_json(tmp / TRAIN_RECORD, record)
    barrier(env)

