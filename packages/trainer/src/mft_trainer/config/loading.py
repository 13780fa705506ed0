"""Reading a config: YAML files, dotted `key=value` overrides, one-line validation errors, relative paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mft_trainer.config.base import ConfigError


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
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")  # our own validators' messages are complete sentences
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
    """Make every relative `Path` field absolute: `~` is the home folder; otherwise against cwd if the key came from
    the command line, else yaml_dir."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        base = cwd if key in cli_keys else yaml_dir
        if isinstance(value, BaseModel):
            resolve_relative_paths(value, yaml_dir=yaml_dir, cwd=cwd, cli_keys=cli_keys, prefix=f"{key}.")
        elif isinstance(value, Path) and not value.is_absolute():
            object.__setattr__(model, name, (base / value.expanduser()).resolve())  # `~/...`: the home folder
        elif key in _STR_PATH_KEYS and isinstance(value, str) and not Path(value).is_absolute():
            if value.startswith("~"):
                object.__setattr__(model, name, str(Path(value).expanduser().resolve()))
            elif value.startswith(("./", "../")) or (base / value).exists():
                object.__setattr__(model, name, str((base / value).resolve()))
