"""`mft-prep stats DIR`: per task and split, records, turns and character-length percentiles, computed with DuckDB
over the memory-mapped Arrow shards; plus the manifest's totals and reject reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from .manifest import REJECTS, read_manifest
from .shards import SCHEMA, open_shard

_QUERY = """
WITH rows AS (
    SELECT task, split, len(messages) AS turns,
           list_sum(list_transform(messages, lambda m: length(m.content))) AS chars
    FROM shards
)
SELECT task, split, count(*) AS records, sum(turns) AS turns,
       quantile_disc(chars, 0.5) AS p50, quantile_disc(chars, 0.9) AS p90,
       quantile_disc(chars, 0.99) AS p99, max(chars) AS max_chars
FROM rows GROUP BY task, split ORDER BY task, split
"""


def shards_table(directory: Path, manifest: dict[str, Any]) -> pa.Table:
    """All shards as one table (memory-mapped, zero-copy) with a `split` column added."""
    tables = []
    for shard in manifest["shards"]:
        table = open_shard(Path(directory) / shard["path"])
        tables.append(table.append_column("split", pa.array([shard["split"]] * table.num_rows, pa.string())))
    if not tables:
        return SCHEMA.empty_table().append_column("split", pa.array([], pa.string()))
    return pa.concat_tables(tables)


def compute_stats(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    manifest = read_manifest(directory)
    shards = shards_table(directory, manifest)  # noqa: F841  (DuckDB scans the local by name)
    con = duckdb.connect()
    con.register("shards", shards)
    cols = ["task", "split", "records", "turns", "p50", "p90", "p99", "max_chars"]
    rows = [dict(zip(cols, r, strict=True)) for r in con.execute(_QUERY).fetchall()]
    reasons: dict[str, int] = {}
    for task in manifest["tasks"].values():
        for reason, n in task["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    return {"splits": rows, "totals": manifest["totals"], "reasons": dict(sorted(reasons.items())),
            "first_at": first_reject_at(directory / REJECTS, set(reasons)),
            "tasks": {name: {"kind": t["kind"], "valid_note": t["valid_note"]} for name, t in manifest["tasks"].items()}}


def first_reject_at(rejects: Path, reasons: set[str]) -> dict[str, str]:
    """`category:reason` -> where its first record is (`file:line` or `file[index]`, see records.location); reads
    rejects.jsonl only until every reason is found."""
    found: dict[str, str] = {}
    if not rejects.is_file():
        return found
    with open(rejects, encoding="utf-8") as f:
        for line in f:
            if len(found) == len(reasons):
                break
            entry = json.loads(line)
            found.setdefault(f"{entry['category']}:{entry['reason']}", entry.get("where", ""))
    return found
