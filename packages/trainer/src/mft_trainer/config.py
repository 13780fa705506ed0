"""The one mft-train configuration schema (`TrainConfig`), YAML loading and dotted `key=value` overrides.

Everything is validated here, before any model or data is loaded: an unknown key, a wrong type or a bad combination
fails with a message naming the dotted key and what was expected. Relative paths in the YAML are resolved against
the YAML's folder; relative paths given as command-line overrides against the current directory.

Sections owned by other modules are composed, not redefined: `model`/`peft` (model_config.py), `data`
(data_config.py), `template` (template.py), `loss` (loss_config.py, owned by the loss-balancing code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mft_trainer.data_config import DataConfig
from mft_trainer.loss_config import LossConfig
from mft_trainer.model_config import ModelConfig, PeftSettings
from mft_trainer.template import TemplateConfig


class ConfigError(ValueError):
    """A configuration problem, with the file and dotted key in the message."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Section):
    """AdamW."""

    lr: float = Field(default=2e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    eps: float = Field(default=1e-8, gt=0)


class ScheduleConfig(_Section):
    """LR schedule in optimizer steps (schedule.py)."""

    kind: Literal["linear", "cosine", "constant"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)


class DistributedConfig(_Section):
    """Data-parallel backend. Multi-process runs are launched by `torchrun`; `none` is one process."""

    backend: Literal["none", "ddp", "fsdp2", "deepspeed"] = "none"
    zero_stage: Literal[2, 3] = 2
    deepspeed_config: Path | None = Field(
        default=None, description="DeepSpeed JSON; default: the shipped configs/deepspeed/zero{stage}.json"
    )


class LoggingConfig(_Section):
    tensorboard: bool = True
    log_every: int = Field(default=1, ge=1)


class TrainConfig(_Section):
    """The whole `mft-train` configuration. Top-level key names are part of the public interface."""

    mode: Literal["sft", "pretrain"] | None = Field(
        default=None, description="shorthand for data.mode (sft: supervised turns; pretrain: concatenate and chunk)"
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
        description="optimizer steps between per-task validations (0: only at the end); the one validation cadence: "
        "loss.validation.every is accepted as another spelling of it and must agree when both are given",
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
        if self.schedule.warmup_steps > self.max_steps:
            raise ValueError(
                f"schedule.warmup_steps ({self.schedule.warmup_steps}) must be <= max_steps ({self.max_steps})"
            )
        if self.schedule.min_lr > self.optimizer.lr:
            raise ValueError(f"schedule.min_lr ({self.schedule.min_lr}) must be <= optimizer.lr ({self.optimizer.lr})")
        if self.mode is not None:
            if "mode" in self.data.model_fields_set and self.data.mode != self.mode:
                raise ValueError(f"mode ({self.mode}) and data.mode ({self.data.mode}) disagree; set one of them")
            self.data.mode = self.mode
        self._reconcile_validation_cadence()
        dist = self.distributed
        if dist.deepspeed_config is not None and dist.backend != "deepspeed":
            raise ValueError("distributed.deepspeed_config is set but distributed.backend is not 'deepspeed'")
        return self

    def _reconcile_validation_cadence(self) -> None:
        """`eval_every` is the one validation cadence (loop, balancing controller, early stopping).

        `loss.validation.every` (the balancing section's spelling) is copied into it when only that one is given;
        both given and different is an error, as is early stopping with no validation before the end.
        """
        every_set = "every" in self.loss.validation.model_fields_set
        if every_set:
            if "eval_every" in self.model_fields_set and self.eval_every != self.loss.validation.every:
                raise ValueError(
                    f"eval_every ({self.eval_every}) and loss.validation.every ({self.loss.validation.every}) "
                    "disagree; they are one setting (steps between validations): give only eval_every"
                )
            self.eval_every = self.loss.validation.every
        elif self.eval_every > 0:
            self.loss.validation.every = self.eval_every  # so the recorded config reads the same in both places
        if self.loss.early_stopping.patience is not None and self.eval_every == 0:
            raise ValueError(
                "loss.early_stopping.patience is set but eval_every is 0 (validation only at the end), so early "
                "stopping could never act; set eval_every to the steps between validations"
            )

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


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> set[str]:
    """Set each `dotted.key=value` into `raw` in place (value parsed as YAML); return the dotted keys set."""
    keys: set[str] = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=1e-4")
        key, _, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"override {item!r}: empty key or empty part in dotted key {key!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: value {text!r} is not valid YAML: {exc}") from exc
        node: dict[str, Any] = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {key}: {prefix} is a {type(child).__name__}, not a section")
            node = child
        node[parts[-1]] = value
        keys.add(key)
    return keys


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({exc.error_count()} error(s)):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p)) or "<top level>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the schema; check the spelling)"
        given = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the union member's name (e.g. "literal['auto','never']" or "function-after[...]") to the loc.
    text = str(part)
    return text.startswith(("literal[", "function-", "lax-or-strict", "json-or-python")) or text in ("path",)


# String fields that hold a local path OR a hub id: resolved only when they look like a local relative path.
_STR_PATH_KEYS = {"model.path", "model.tokenizer"}


def resolve_relative_paths(model: BaseModel, *, yaml_dir: Path, cwd: Path, cli_keys: set[str], prefix: str = "") -> None:
    """Make every relative `Path` field absolute: against cwd if the key came from the command line, else yaml_dir."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        base = cwd if key in cli_keys else yaml_dir
        if isinstance(value, BaseModel):
            resolve_relative_paths(value, yaml_dir=yaml_dir, cwd=cwd, cli_keys=cli_keys, prefix=f"{key}.")
        elif isinstance(value, Path) and not value.is_absolute():
            object.__setattr__(model, name, (base / value).resolve())
        elif key in _STR_PATH_KEYS and isinstance(value, str) and not Path(value).is_absolute():
            if value.startswith(("./", "../")) or (base / value).exists():
                object.__setattr__(model, name, str((base / value).resolve()))
