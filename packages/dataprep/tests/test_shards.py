"""Spool and shard writers: size-bounded batches, bounded shard rows, temp-then-rename, recorded sha256."""

from __future__ import annotations

import pyarrow as pa
from mft_dataprep.shards import SCHEMA, ShardWriter, SpoolWriter, open_shard, read_spool, sha256_file


def _row(i: int, chars: int) -> dict:
    return {"id": f"t-{i}", "task": "t", "messages": [{"role": "assistant", "content": "x" * chars}],
            "source": "s", "source_index": i, "content_hash": "h", "split_key": i}


def test_spool_flushes_on_size_and_shards_keep_rows_bounded(tmp_path):
    spool = SpoolWriter(tmp_path / "t.arrows", batch_rows=1000, batch_chars=250)
    for i in range(10):
        spool.add(_row(i, 100))
    spool.close()
    batches = list(read_spool(spool.path))
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]  # 300 chars >= 250 after every third row
    writer = ShardWriter(tmp_path, "train", "t", rows_per_shard=4, compression="none")
    for b in batches:
        writer.write(pa.RecordBatch.from_arrays(b.columns[: len(SCHEMA)], schema=SCHEMA))
    shards = writer.close()
    assert [s.rows for s in shards] == [4, 4, 2]
    assert not list(tmp_path.rglob("*.tmp"))
    for s in shards:
        table = open_shard(tmp_path / s.path)
        assert table.num_rows == s.rows and sha256_file(tmp_path / s.path) == s.sha256
    ids = [i for s in shards for i in open_shard(tmp_path / s.path).column("id").to_pylist()]
    assert ids == [f"t-{i}" for i in range(10)]
