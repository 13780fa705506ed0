"""Arrow IPC shards with the Contract 1 schema, written under a temporary name and renamed when complete.

Shards use the Arrow IPC *streaming* format (the one `datasets.Dataset.from_file` memory-maps); read one with
`pyarrow.ipc.open_stream(pyarrow.memory_map(path))`. Every shard holds at most `rows_per_shard` rows.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

MESSAGE_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_index", pa.int64(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
    ]
)
SPOOL_SCHEMA = SCHEMA.append(pa.field("split_key", pa.uint64(), nullable=False))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _ipc_options(compression: str) -> pa.ipc.IpcWriteOptions:
    return pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class ShardInfo:
    path: str  # relative to the dataset directory
    rows: int
    bytes: int
    sha256: str


class ShardWriter:
    """Accumulates rows of one task and split; writes `part-NNNNN.arrow` every `rows_per_shard` rows."""

    def __init__(self, root: Path, split: str, task: str, rows_per_shard: int, compression: str) -> None:
        self.root = root
        self.rel_dir = Path(split) / task
        self.rows_per_shard = rows_per_shard
        self.options = _ipc_options(compression)
        self.shards: list[ShardInfo] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards) + self._pending_rows

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            take = min(batch.num_rows, self.rows_per_shard - self._pending_rows)
            self._pending.append(batch.slice(0, take))
            self._pending_rows += take
            batch = batch.slice(take)
            if self._pending_rows == self.rows_per_shard:
                self._flush()

    def close(self) -> list[ShardInfo]:
        if self._pending_rows:
            self._flush()
        return self.shards

    def _flush(self) -> None:
        rel = self.rel_dir / f"part-{len(self.shards):05d}.arrow"
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".tmp")
        # The pending batches are written as they are (not combined): one string column of a combined shard could
        # pass Arrow's 2 GiB limit with large text records. Batch boundaries are deterministic, so are the bytes.
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA, options=self.options) as writer:
            for batch in self._pending:
                writer.write_batch(batch)
        os.replace(tmp, final)
        self.shards.append(ShardInfo(rel.as_posix(), self._pending_rows, final.stat().st_size, sha256_file(final)))
        self._pending = []
        self._pending_rows = 0


class SpoolWriter:
    """Kept rows of one task in input order, with their split key, before the split is known (pass 1)."""

    def __init__(self, path: Path, batch_rows: int = 2048, batch_chars: int = 32 << 20) -> None:
        self.path = path
        self.batch_rows = batch_rows
        self.batch_chars = batch_chars  # also flush on size, so a few huge text records cannot pile up
        self._chars = 0
        self._cols: dict[str, list] = {name: [] for name in SPOOL_SCHEMA.names}
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, SPOOL_SCHEMA)
        self.rows = 0

    def add(self, row: dict) -> None:
        for name, values in self._cols.items():
            values.append(row[name])
        self.rows += 1
        self._chars += sum(len(m["content"]) for m in row["messages"])
        if len(self._cols["id"]) >= self.batch_rows or self._chars >= self.batch_chars:
            self._flush()

    def _flush(self) -> None:
        if self._cols["id"]:
            self._writer.write_batch(pa.RecordBatch.from_pydict(self._cols, schema=SPOOL_SCHEMA))
            self._cols = {name: [] for name in SPOOL_SCHEMA.names}
            self._chars = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()


def read_spool(path: Path):
    """Yield the spooled record batches of one task, one at a time (plain reads, not a memory map, so resident
    memory stays at one batch however large the spool)."""
    with pa.OSFile(str(path), "rb") as source:
        yield from pa.ipc.open_stream(source)


def open_shard(path: Path) -> pa.Table:
    """A shard as a table backed by the memory map."""
    return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
