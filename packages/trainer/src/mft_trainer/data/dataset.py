"""Read a prepared dataset (Contract 1) through its files only: manifest.json and the Arrow IPC shards.

Layout: `manifest.json`, `train/<task>/part-NNNNN.arrow`, `valid/<task>/part-NNNNN.arrow`; every row has `id`, `task`,
`messages` (list of {role, content}), `source`, `source_index`, `content_hash`. The trainer never imports mft_dataprep.
Task kinds come from the manifest (`tasks.<name>.kind`, `text` for raw-text pretraining tasks, `chat` otherwise).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

SPLITS = ("train", "valid")
REQUIRED_COLUMNS = ("id", "task", "messages")


class PreparedDatasetError(ValueError):
    """The directory is not a readable Contract-1 prepared dataset; the message names the file."""


def read_table(path: Path) -> pa.Table:
    try:
        with pa.memory_map(str(path), "r") as source:
            try:
                return pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                return pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise PreparedDatasetError(f"{path}: not a readable Arrow IPC file ({exc})") from exc


@dataclass
class PreparedDataset:
    """A prepared dataset directory. `tasks` is sorted; a task's index in it is its task id everywhere."""

    path: Path
    manifest: dict[str, Any]
    manifest_hash: str
    tasks: list[str]
    task_kinds: dict[str, str]
    shards: dict[tuple[str, str], list[Path]] = field(default_factory=dict)
    empty_tasks: list[str] = field(default_factory=list)  # named by the manifest, with no train records

    def shard_paths(self, split: str, task: str | None = None) -> list[Path]:
        """Shards of `split` (all tasks in task order, or one task), each in part order."""
        names = self.tasks if task is None else [task]
        return [p for name in names for p in self.shards.get((split, name), [])]

    def records(self, split: str, task: str | None = None) -> Iterator[dict[str, Any]]:
        """Rows of `split` as dicts, tasks in sorted order, shards in part order, rows in file order."""
        if split not in SPLITS:
            raise PreparedDatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
        if task is not None and task not in self.tasks:
            raise PreparedDatasetError(f"{self.path}: unknown task {task!r}; tasks are {self.tasks}")
        for shard in self.shard_paths(split, task):
            yield from read_shard(shard)

    def num_records(self, split: str, task: str | None = None) -> int:
        return sum(read_table(shard).num_rows for shard in self.shard_paths(split, task))


def read_shard(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of one shard as dicts; checks the Contract-1 columns are present."""
    table = read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise PreparedDatasetError(f"{path}: missing column(s) {missing}; Contract 1 requires {REQUIRED_COLUMNS}")
    yield from table.to_pylist()


def _task_kinds(manifest: dict[str, Any], tasks: list[str]) -> dict[str, str]:
    entries = manifest.get("tasks", {})
    by_name: dict[str, Any] = {}
    if isinstance(entries, dict):
        by_name = entries
    elif isinstance(entries, list):
        by_name = {e.get("name"): e for e in entries if isinstance(e, dict)}
    kinds = {}
    for task in tasks:
        entry = by_name.get(task) or {}
        kind = entry.get("kind", "chat") if isinstance(entry, dict) else "chat"
        if kind not in ("chat", "text"):
            raise PreparedDatasetError(f"manifest.json: tasks.{task}.kind is {kind!r}; expected 'chat' or 'text'")
        kinds[task] = kind
    return kinds


def open_prepared(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset; fails with the file name when the manifest or a listed shard is missing."""
    root = Path(path)
    manifest_path = root / "manifest.json"
    if not root.is_dir():
        raise PreparedDatasetError(f"{root} does not exist; expected a prepared dataset folder written by mft-prep")
    if not manifest_path.is_file():
        raise PreparedDatasetError(
            f"{manifest_path} not found: {root} is not a complete prepared dataset (mft-prep writes manifest.json "
            "last; raw data goes through `mft-prep run` first)"
        )
    raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PreparedDatasetError(f"{manifest_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    shards: dict[tuple[str, str], list[Path]] = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for task_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            parts = sorted(task_dir.glob("part-*.arrow"))
            if parts:
                shards[(split, task_dir.name)] = parts
    listed = manifest.get("shards")
    if isinstance(listed, list):
        for entry in listed:
            rel = entry.get("path") if isinstance(entry, dict) else None
            if rel and not (root / rel).is_file():
                raise PreparedDatasetError(f"{manifest_path}: shard {rel} is listed but missing")
    tasks = sorted({task for (_, task) in shards})
    named = manifest.get("tasks")
    named = list(named) if isinstance(named, dict) else [e.get("name") for e in named or [] if isinstance(e, dict)]
    empty = sorted(str(t) for t in named if t and (SPLITS[0], t) not in shards)
    if not tasks:
        raise PreparedDatasetError(f"{root}: no shards found under train/<task>/part-*.arrow"
                                   + (f" (manifest.json tasks with no records: {', '.join(empty)})" if empty else ""))
    return PreparedDataset(
        path=root,
        manifest=manifest,
        manifest_hash=hashlib.sha256(raw).hexdigest(),
        tasks=tasks,
        task_kinds=_task_kinds(manifest, tasks),
        shards=shards,
        empty_tasks=empty,
    )
