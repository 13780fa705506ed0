"""The root of the mft-train config (`TrainConfig`) and its small top-level sections.

Everything is validated before any model or data is loaded: an unknown key, a wrong type or a bad combination
fails with a message naming the dotted key and what was expected. The larger sections have their own files
(`model.py`: model and peft, `data.py`, `template.py`, `loss.py`); combinations across sections are checked in
`checks.py`; reading YAML and overrides is `loading.py`. Relative paths in the YAML are resolved against the
YAML's folder; relative paths given as command-line overrides against the current directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from mft_trainer.config.base import ConfigError, Section
from mft_trainer.config.checks import check_train_config
from mft_trainer.config.data import DataConfig
from mft_trainer.config.loading import (
    apply_overrides,
    format_validation_error,
    load_yaml_mapping,
    resolve_relative_paths,
)
from mft_trainer.config.loss import LossConfig
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.config.template import TemplateConfig


class OptimizerConfig(Section):
    """AdamW."""

    lr: float = Field(default=2e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    eps: float = Field(default=1e-8, gt=0)


class ScheduleConfig(Section):
    """LR schedule in optimizer steps (schedule.py)."""

    kind: Literal["linear", "cosine", "constant"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)


class DistributedConfig(Section):
    """Data-parallel backend. Multi-process runs are launched by `torchrun`; `none` is one process."""

    backend: Literal["none", "ddp", "fsdp2", "deepspeed"] = "none"
    zero_stage: Literal[2, 3] = 2
    deepspeed_config: Path | None = Field(
        default=None, description="DeepSpeed JSON; default: the shipped configs/deepspeed/zero{stage}.json"
    )


class LoggingConfig(Section):
    tensorboard: bool = True
    log_every: int = Field(default=1, ge=1)


class TrainConfig(Section):
    """The whole `mft-train` configuration. Top-level key names are part of the public interface."""

    mode: Literal["sft", "pretrain"] = Field(
        default="sft",
        description="sft: one sample per segment, loss on assistant turns; pretrain: concatenate with EOS and chunk",
    )
    model: ModelConfig
    peft: PeftSettings = Field(default_factory=PeftSettings)
    data: DataConfig
    template: TemplateConfig = Field(default_factory=TemplateConfig)
    loss: LossConfig = Field(default_factory=LossConfig)

    output_dir: Path
    seed: int = 42
    max_steps: int = Field(default=100, ge=1)
    save_every: int = Field(default=0, ge=0, description="0: only the final model")
    keep_last: int = Field(default=2, ge=1)
    resume: Literal["auto", "never"] | Path = "auto"
    eval_every: int = Field(
        default=0, ge=0,
        description="optimizer steps between per-task validations (0: only at the end)",
    )

    packing: bool = True
    seq_length: int = Field(default=1024, ge=8)
    micro_batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=1, ge=1)

    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    clip_grad: float | None = Field(default=1.0, gt=0, description="max global grad norm; null disables")

    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        check_train_config(self)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Load `path`, apply dotted overrides (`a.b=value`, value parsed as YAML), validate, resolve paths."""
        path = Path(path)
        raw = load_yaml_mapping(path)
        override_keys = apply_overrides(raw, overrides or [])
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source=str(path))) from exc
        resolve_relative_paths(cfg, yaml_dir=path.resolve().parent, cwd=Path.cwd(), cli_keys=override_keys)
        return cfg

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: Path | None = None) -> TrainConfig:
        """Validate an in-memory mapping (the pipeline runner's stage section); relative paths against base_dir.

        Raises pydantic's ValidationError unchanged, which the runner formats with the stage name.
        """
        cfg = cls.model_validate(data)
        base = Path(base_dir or Path.cwd()).resolve()
        resolve_relative_paths(cfg, yaml_dir=base, cwd=base, cli_keys=set())
        return cfg

    def to_yaml_dict(self, *, only_set: bool = False) -> dict[str, Any]:
        """JSON/YAML-safe dict of the resolved config (paths as strings).

        only_set: just the keys given (plus resolved paths), which re-validates to the same config; the full dump
        also lists every default (what mft_train.json records) but some sections reject defaults echoed back.
        """
        return self.model_dump(mode="json", exclude_unset=only_set)
