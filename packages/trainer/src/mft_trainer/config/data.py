"""The `data:` config section: which prepared dataset, how tasks are sampled, over-long policy, cache, workers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mft_trainer.config.base import Section, reject_other_spellings


def default_cache_dir() -> Path:
    """`$MFT_CACHE_DIR` or `~/.cache/mft_trainer/tokenized`: the prepared data may sit on a read-only share."""
    env = os.environ.get("MFT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mft_trainer" / "tokenized"


class DataConfig(Section):
    """Data options. Packing, seq_length, batch sizes and `mode` are top-level training keys, passed to the stream."""

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        return reject_other_spellings(data, "data", {"mode": "mode"})

    path: Path = Field(description="a prepared dataset directory (Contract 1)")
    task_sampling: Literal["proportional", "uniform", "temperature"] | dict[str, float] = Field(
        "proportional",
        description="per-task sampling weights: proportional to size, uniform, temperature (n_k^(1/T)), or explicit "
        "relative numbers per task name",
    )
    temperature: float = Field(2.0, gt=0, description="T for task_sampling: temperature")
    epoch_size: int | None = Field(
        None, gt=0, description="samples per epoch (default: the train split's size); weights set each task's share"
    )
    overlong: Literal["truncate", "drop"] = Field(
        "drop",
        description="samples longer than seq_length: drop, or truncate (after the last whole round that fits, else "
        "at seq_length keeping the assistant start; an answer whose EOS is cut is counted as eos_cut)",
    )
    pack_window: int | None = Field(
        None, gt=0, description="bin-pack the epoch in windows of this many samples (default: the whole epoch)"
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)
    allow_empty_tasks: bool = Field(
        False,
        description="train without the tasks the dataset's manifest names but holds no train records for (all "
        "records rejected by mft-prep); default: such a task is an error naming it",
    )
    num_workers: int | None = Field(
        None,
        ge=0,
        description="tokenizer processes; 0 tokenizes in the calling process (the Rust tokenizer still uses every "
        "core); default: 0 on machines with <= 2 cores, where processes measured 1.3-1.5x slower, else cores // 2 "
        "up to 8",
    )

    def resolved_num_workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        cores = os.cpu_count() or 1
        return 0 if cores <= 2 else min(8, cores // 2)

    @field_validator("task_sampling")
    @classmethod
    def _check_weights(cls, value):
        if isinstance(value, dict):
            if not value:
                raise ValueError("explicit task weights: give at least one task")
            bad = {k: v for k, v in value.items() if not (v >= 0)}
            if bad:
                raise ValueError(f"explicit task weights must be >= 0, got {bad}")
            if not any(v > 0 for v in value.values()):
                raise ValueError("explicit task weights: at least one must be > 0")
        return value

