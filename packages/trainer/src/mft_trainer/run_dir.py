"""What a run does with its `output_dir`: start fresh, resume from a checkpoint, or refuse, and says which.

    plan = plan_start(cfg, overwrite=False, allow_config_change=False)   # raises RunDirError when it must refuse
    plan.message    -> "starting fresh in DIR" | "resuming from step N (DIR/checkpoints/step-N)"

The rules (README, mft-train "Resuming"):

- `final/` present: the run in `output_dir` is finished. A new run refuses (it would retrain and replace `final/`)
  unless `--overwrite`, which starts from scratch and first removes the old `checkpoints/`, `best/`, `metrics.jsonl`
  and `tensorboard/` (the old `final/` is replaced when the new one is written). To train on from a finished run's
  checkpoint, resume from it into another folder: `resume=OLD/checkpoints/step-N output_dir=NEW`.
- `resume: auto` resumes from the newest complete checkpoint, or starts fresh when there is none; `resume: PATH`
  resumes from that checkpoint; `resume: never` starts fresh, and refuses when `output_dir` holds checkpoints of an
  earlier run (they would mix with the new ones) unless `--overwrite`.
- Resuming compares the config with the checkpoint's (`meta.json`). Keys in `SAFE_KEYS` may change and are listed;
  keys in `FIXED_KEYS` shape the model or the data stream, so the checkpoint cannot continue with other values
  (refused even with the flag: `--overwrite` or another `output_dir`); any other change (learning rate, schedule,
  clipping, loss settings, dtype) refuses unless `--allow-config-change`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mft_trainer import checkpoint as ckpt
from mft_trainer.config import TrainConfig
from mft_trainer.metrics_log import METRICS_FILE

# May change on resume: bookkeeping, where things go, and how long to train (the LR schedule then spans the new
# max_steps from the step reached).
SAFE_KEYS = ("max_steps", "save_every", "keep_last", "eval_every", "logging", "data.cache_dir", "data.num_workers",
             "resume", "output_dir")
# The checkpoint's weights, optimizer state and data-stream position only make sense with these unchanged.
FIXED_KEYS = ("mode", "model.init", "model.path", "model.tokenizer", "model.trust_remote_code", "peft", "template",
              "data", "seed", "seq_length", "packing", "micro_batch_size", "grad_accum", "distributed", "loss.mode")
OVERWRITE_FLAG = "--overwrite"
CHANGE_FLAG = "--allow-config-change"


class RunDirError(ValueError):
    """A run that would silently lose or mix results; the message names the flag that allows it."""


@dataclass
class StartPlan:
    resume_from: Path | None
    step: int
    message: str
    clear: bool = False  # --overwrite: remove the earlier run's files before starting
    changes: list[str] = field(default_factory=list)


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted.key: leaf}."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, checkpoint's value, this run's value) for every leaf that differs, sorted by key."""
    a, b = flatten(old), flatten(new)
    missing = object()
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, default=str)


def _describe(changes: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in changes)


def final_step(output_dir: Path) -> int | None:
    """The step recorded in `final/mft_train.json` (None when unreadable)."""
    try:
        return int(json.loads((output_dir / ckpt.FINAL / ckpt.TRAIN_RECORD).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_start(cfg: TrainConfig, *, overwrite: bool = False, allow_config_change: bool = False) -> StartPlan:
    """Decide how this run starts in `cfg.output_dir` (reads files only; see the module docstring)."""
    out = Path(cfg.output_dir)
    final = out / ckpt.FINAL
    existing = ckpt.complete_checkpoints(out)
    if overwrite:
        earlier = final.is_dir() or bool(existing) or (out / METRICS_FILE).is_file()
        why = f" ({OVERWRITE_FLAG}: the earlier run in {out} is replaced)" if earlier else f" in {out}"
        return StartPlan(None, 0, f"starting fresh{why}", clear=earlier)
    if final.is_dir():
        step = final_step(out)
        at = f" of step {step}" if step is not None else ""
        latest = f"resume={existing[-1][1]} " if existing else ""
        raise RunDirError(
            f"output_dir {out} holds a finished run ({final}{at}); pass {OVERWRITE_FLAG} to train again from "
            f"scratch and replace it, or set another output_dir"
            + (f" (to train on from its last checkpoint: {latest}output_dir=NEW)" if latest else "")
        )
    if cfg.resume == "never":
        if existing:
            raise RunDirError(
                f"resume: never, but {out / ckpt.CHECKPOINTS} holds checkpoints of an earlier run "
                f"({', '.join(p.name for _, p in existing)}) that would mix with this run's; pass {OVERWRITE_FLAG} "
                "to remove them and start fresh, or set another output_dir"
            )
        return StartPlan(None, 0, f"starting fresh in {out} (resume: never)")
    source = ckpt.resolve_resume(cfg.resume, out)
    if source is None:
        return StartPlan(None, 0, f"starting fresh in {out}")
    meta = ckpt.read_meta(source)
    step = int(meta["step"])
    if step > cfg.max_steps:
        raise RunDirError(f"max_steps: {cfg.max_steps} is below the step of the checkpoint to resume ({source}, "
                          f"step {step}); raise max_steps, or pass {OVERWRITE_FLAG} to start over")
    changes = config_changes(meta["config"], cfg.to_yaml_dict()) if isinstance(meta.get("config"), dict) else []
    safe = [c for c in changes if _matches(c[0], SAFE_KEYS)]
    fixed = [c for c in changes if _matches(c[0], FIXED_KEYS) and c not in safe]
    other = [c for c in changes if c not in fixed and c not in safe]
    if fixed:
        raise RunDirError(
            f"resume: checkpoint {source} cannot continue with a changed {_describe(fixed)} (the weights, optimizer "
            f"or data stream depend on it); pass {OVERWRITE_FLAG} to start over, or set another output_dir"
        )
    if other and not allow_config_change:
        raise RunDirError(
            f"resume: the config differs from checkpoint {source}'s: {_describe(other)}; pass {CHANGE_FLAG} to "
            f"resume with the new values, {OVERWRITE_FLAG} to start over, or set another output_dir"
        )
    listed = safe + other
    message = f"resuming from step {step} ({source})" + (f"; changed: {_describe(listed)}" if listed else "")
    return StartPlan(source, step, message, changes=[k for k, _, _ in listed])


def clear_earlier_run(output_dir: Path) -> None:
    """What `--overwrite` removes before a fresh start (rank 0): checkpoints, best/, metrics and TensorBoard logs."""
    out = Path(output_dir)
    for name in (ckpt.CHECKPOINTS, ckpt.BEST, "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / METRICS_FILE).unlink(missing_ok=True)
