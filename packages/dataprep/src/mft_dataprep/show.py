"""`mft-prep show DIR --task NAME -n 3`: the first records of a task, pretty-printed turn by turn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .manifest import read_manifest
from .records import location
from .shards import open_shard


class UnknownTaskError(ValueError):
    """`--task` names no task of the prepared directory."""


def iter_records(directory: Path, task: str, split: str = "train") -> Iterator[dict[str, Any]]:
    directory = Path(directory)
    manifest = read_manifest(directory)
    if task not in manifest["tasks"]:
        raise UnknownTaskError(f"{directory}: no task {task!r}; tasks are {sorted(manifest['tasks'])}")
    for shard in manifest["shards"]:
        if shard["task"] == task and shard["split"] == split:
            for batch in open_shard(directory / shard["path"]).to_batches(max_chunksize=64):
                yield from batch.to_pylist()


def first_records(directory: Path, task: str, n: int, split: str = "train") -> list[dict[str, Any]]:
    out = []
    for record in iter_records(directory, task, split):
        if len(out) >= n:
            break
        out.append(record)
    return out


def source_locations(directory: Path) -> Callable[[str, int], str]:
    """`where(source, source_index)`: a record's place as `records.location` writes it, using the container the
    manifest recorded for each source."""
    containers = {s["path"]: s["container"] for s in read_manifest(Path(directory))["sources"]}
    return lambda source, index: location(source, index, containers.get(source, "jsonl"))
