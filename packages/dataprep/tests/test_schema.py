"""Contract 1 schema: the shards read back with `datasets` (both loaders) and with DuckDB, and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from mft_dataprep.api import PrepConfig, run
from mft_dataprep.manifest import MANIFEST
from mft_dataprep.shards import SCHEMA, open_shard, sha256_file
from mft_dataprep.stats import compute_stats

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "mft_dataprep" / "sample_data"
CONTRACT = pa.schema([
    ("id", pa.string()), ("task", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("source", pa.string()), ("source_index", pa.int64()), ("content_hash", pa.string()),
])


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    return run(PrepConfig.from_yaml(SAMPLE / "demo.yaml"), tmp_path_factory.mktemp("demo") / "out", progress=False)


def test_shard_schema_matches_contract(demo_out):
    manifest = json.loads((demo_out / MANIFEST).read_text())
    assert SCHEMA.names == CONTRACT.names and [f.type for f in SCHEMA] == [f.type for f in CONTRACT]
    for shard in manifest["shards"]:
        path = demo_out / shard["path"]
        table = open_shard(path)
        assert table.schema.names == CONTRACT.names
        assert [f.type for f in table.schema] == [f.type for f in CONTRACT]
        assert table.num_rows == shard["rows"] <= manifest["config"]["rows_per_shard"]
        assert sha256_file(path) == shard["sha256"] and path.stat().st_size == shard["bytes"]
        assert set(table.column("task").to_pylist()) == {shard["task"]}
        assert shard["path"].startswith(f"{shard['split']}/{shard['task']}/part-")


def test_read_back_with_datasets(demo_out):
    datasets = pytest.importorskip("datasets")
    manifest = json.loads((demo_out / MANIFEST).read_text())
    shard = next(s for s in manifest["shards"] if s["task"] == "code-exercise" and s["split"] == "train")
    ds = datasets.Dataset.from_file(str(demo_out / shard["path"]))  # memory-maps the IPC stream
    assert ds.num_rows == shard["rows"]
    assert set(ds.column_names) == set(CONTRACT.names)
    assert ds[0]["messages"][0]["role"] in ("system", "user")
    train_files = [str(demo_out / s["path"]) for s in manifest["shards"] if s["split"] == "train"]
    loaded = datasets.load_dataset("arrow", data_files={"train": train_files}, split="train")
    assert loaded.num_rows == sum(t["splits"]["train"]["records"] for t in manifest["tasks"].values())


def test_read_back_with_duckdb(demo_out):
    manifest = json.loads((demo_out / MANIFEST).read_text())
    # DuckDB scans the memory-mapped Arrow tables in place (it has no built-in IPC reader here).
    shards = pa.concat_tables(open_shard(demo_out / s["path"]) for s in manifest["shards"])
    con = duckdb.connect()
    con.register("shards", shards)
    rows = con.execute(
        "SELECT task, count(*), sum(len(messages)), min(source_index) FROM shards GROUP BY task ORDER BY task"
    ).fetchall()
    assert {r[0]: r[1] for r in rows} == {name: t["kept"] for name, t in manifest["tasks"].items() if t["kept"]}
    roles = {r[0] for r in con.execute("SELECT DISTINCT unnest(messages).role FROM shards").fetchall()}
    assert roles == {"system", "user", "assistant"}


def test_stats_agree_with_manifest(demo_out):
    stats = compute_stats(demo_out)
    manifest = json.loads((demo_out / MANIFEST).read_text())
    for row in stats["splits"]:
        assert row["records"] == manifest["tasks"][row["task"]]["splits"][row["split"]]["records"]
        assert row["p50"] <= row["p90"] <= row["p99"] <= row["max_chars"]
    assert stats["totals"] == manifest["totals"]
    assert stats["reasons"]["contaminated:humaneval"] == 1
