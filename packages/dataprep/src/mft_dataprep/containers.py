"""Containers: stream raw records out of JSON Lines, JSON arrays (ijson), gzip of either, Parquet and text files.

Nothing here loads a whole file into Python objects: JSON Lines go line by line, JSON arrays through ijson's
incremental parser, Parquet batch by batch. Parse failures are yielded as items carrying a `Rejected`, so the
caller counts and records them like any other rejection.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import ijson
import pyarrow.parquet as pq

from .records import RawItem, Rejected

_PARQUET_BATCH = 1024


def container_of(path: Path) -> str:
    """`parquet`, `jsonl` or `json-array` (gzip is looked through), from the extension and the first byte."""
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    with _open_binary(path) as f:
        while True:
            chunk = f.read(4096)
            if not chunk:
                return "jsonl"  # an empty file: no records either way
            stripped = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")  # whitespace and a UTF-8 BOM
            if stripped:
                return "json-array" if stripped[:1] == b"[" else "jsonl"


def _open_binary(path: Path) -> IO[bytes]:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_items(path: Path) -> Iterator[RawItem]:
    kind = container_of(path)
    if kind == "parquet":
        yield from _read_parquet(path)
    elif kind == "json-array":
        yield from _read_json_array(path)
    else:
        yield from _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[RawItem]:
    loads = json.loads
    with _open_binary(path) as f:
        for lineno, line in enumerate(f, start=1):
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raw = line.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
                yield RawItem(lineno, None, raw, Rejected("invalid_utf8", f"byte {err.start}: {err.reason}"))
                continue
            text = text.rstrip("\r\n")
            try:
                obj = loads(text)
            except json.JSONDecodeError as err:
                yield RawItem(lineno, None, text, Rejected("invalid_json", f"column {err.colno}: {err.msg}"))
                continue
            # Strictly decoded text cannot hold surrogates; only a \uD8xx escape can put one in a string.
            yield RawItem(lineno, obj, text, None, check_surrogates="\\ud" in text or "\\uD" in text)


def _read_json_array(path: Path) -> Iterator[RawItem]:
    index = -1
    with _open_binary(path) as f:
        try:
            for index, obj in enumerate(ijson.items(f, "item", use_float=True)):  # noqa: B007
                yield RawItem(index, obj, json.dumps(obj, ensure_ascii=False))
        except (ijson.JSONError, UnicodeDecodeError) as err:
            # A syntax error ends an array: nothing after it can be located reliably. Record it once.
            yield RawItem(
                index + 1, None, "", Rejected("invalid_json", f"array element {index + 1}: {err}; rest of file unread")
            )


def _read_parquet(path: Path) -> Iterator[RawItem]:
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH):
        for row in batch.to_pylist():
            yield RawItem(index, row, json.dumps(row, ensure_ascii=False, default=str), check_surrogates=False)
            index += 1


def read_text_file(path: Path) -> RawItem:
    """A whole file as one record (the `text` task kind)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raw = data.decode("utf-8", errors="backslashreplace")
        return RawItem(0, None, raw, Rejected("invalid_utf8", f"byte {err.start}: {err.reason}"))
    if text.startswith("\ufeff"):
        text = text[1:]
    return RawItem(0, text, text, check_surrogates=False)
