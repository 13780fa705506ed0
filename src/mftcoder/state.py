"""What the runner remembers about each stage: `<workdir>/.mft/state/<stage>.json`, written atomically.

A record holds the stage key (see fingerprint.py) and its parts, so `mft status` can say *why* a stage is stale
(its config changed, an input file changed, an earlier stage was rerun), plus status, timings and the output path.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageRecord:
    stage: str
    tool: str
    status: str  # "done" | "failed" | "running"
    key: str
    config_hash: str
    upstream: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    output: str = ""
    started: float = 0.0
    finished: float = 0.0
    log: str = ""
    error: str = ""

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started)


def state_dir(workdir: Path) -> Path:
    return workdir / ".mft" / "state"


def read_record(workdir: Path, stage: str) -> StageRecord | None:
    path = state_dir(workdir) / f"{stage}.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return StageRecord(**data)


def write_record(workdir: Path, record: StageRecord) -> None:
    directory = state_dir(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / f"{record.stage}.json", asdict(record))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
