"""The Python API of mft-train (the CLI and the pipeline runner call these).

    cfg = TrainConfig.from_yaml("run.yaml", ["optimizer.lr=1e-4"])   # validated, paths resolved
    final_dir = train(cfg)                                           # output_dir/final (Contract 2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mft_trainer.config import ConfigError, TrainConfig

__all__ = ["ConfigError", "TrainConfig", "check_inputs", "dry_run_summary", "load_config", "train"]


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Same as TrainConfig.from_yaml."""
    return TrainConfig.from_yaml(path, overrides)


def train(config: TrainConfig, progress: bool = True, *, overwrite: bool = False,
          allow_config_change: bool = False) -> Path:
    """Train (or resume, per `config.resume`) and return `config.output_dir / "final"`.

    Run it in every process of a `torchrun` launch; a single process needs no launcher. How the run starts in an
    output_dir that already holds one (refuse, resume, or with `overwrite` start over) is `run_dir.plan_start`;
    `allow_config_change` resumes although optimizer/schedule/loss settings differ from the checkpoint's.
    progress: the live bar when stdout is a terminal (plain log lines otherwise, and when False).
    """
    from mft_trainer.loop import run_training

    return run_training(config, progress=progress, overwrite=overwrite, allow_config_change=allow_config_change)


def check_inputs(config: TrainConfig) -> None:
    """The checks training starts with (data.path, model and tokenizer folders), without loading a model."""
    from mft_trainer.inputs import check_inputs as check

    check(config)


def dry_run_summary(config: TrainConfig, world_size: int | None = None, *, overwrite: bool = False,
                    allow_config_change: bool = False) -> dict[str, Any]:
    """What `--dry-run` prints: the dataset (tasks, records per split), the token budget and how the run would start
    (raising, as training would, on a bad input or an output_dir it must not train into). Loads no model."""
    import os

    from mft_trainer.inputs import check_inputs as check
    from mft_trainer.run_dir import plan_start

    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    dataset = check(config)
    start = plan_start(config, overwrite=overwrite, allow_config_change=allow_config_change)
    tasks = {
        name: {"kind": dataset.task_kinds.get(name, "chat"), "train": dataset.num_records("train", name),
               "valid": dataset.num_records("valid", name)}
        for name in dataset.tasks
    }
    rows_per_step = config.micro_batch_size * config.grad_accum * world
    return {
        "dataset": {"path": str(config.data.path), "manifest_hash": dataset.manifest_hash, "tasks": tasks,
                    "empty_tasks": dataset.empty_tasks},
        "start": start.message,
        "budget": {
            "world_size": world,
            "rows_per_optimizer_step": rows_per_step,
            "token_slots_per_step": rows_per_step * config.seq_length,
            "max_steps": config.max_steps,
            "token_slots_total": rows_per_step * config.seq_length * config.max_steps,
            "note": "slots = rows x seq_length; packed rows fill nearly all slots, padded rows fewer",
        },
    }
