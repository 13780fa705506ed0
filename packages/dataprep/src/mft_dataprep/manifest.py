"""manifest.json: what a prepared directory holds, written last so its presence means the output is complete.

Also decides whether an existing output can be reused: same schema version, same config hash, the same input
files with the same bytes (size, then sha256), the same decontamination data, and every listed shard present
with its recorded size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import PrepConfig
from .shards import atomic_write_bytes, sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"


def write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    atomic_write_bytes(output / MANIFEST, data.encode("utf-8"))


def read_manifest(output: Path) -> dict[str, Any]:
    path = Path(output) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{output}: no {MANIFEST}; not a complete mft-prep output (run `mft-prep run`)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {manifest.get('schema_version')!r}, this mft-prep reads {SCHEMA_VERSION}"
        )
    return manifest


def is_complete(output: Path, config: PrepConfig) -> bool:
    """True when `output` already holds the result of `config` over the current inputs."""
    path = output / MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("schema_version") != SCHEMA_VERSION or manifest.get("config_hash") != config.config_hash():
        return False
    current = [(task.name, p) for task in config.tasks for p in config.task_sources(task)]
    recorded = manifest.get("sources", [])
    if [(t, config.source_label(p)) for t, p in current] != [(s["task"], s["path"]) for s in recorded]:
        return False
    for (_, p), s in zip(current, recorded, strict=True):
        if p.stat().st_size != s["bytes"] or sha256_file(p) != s["sha256"]:
            return False
    from .prep import benchmark_files  # late: prep imports this module

    if manifest.get("benchmarks") != benchmark_files(config):
        return False
    for shard in manifest.get("shards", []):
        shard_path = output / shard["path"]
        if not shard_path.is_file() or shard_path.stat().st_size != shard["bytes"]:
            return False
    return (output / REJECTS).is_file()
