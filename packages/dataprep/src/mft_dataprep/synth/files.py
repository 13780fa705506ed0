"""Serialisation and crash-safe writing of the generator's outputs.

Every file is written under a temporary name in its final folder and renamed into place, so a crash never leaves
a half-written file under a real name; the manifest is written last and only describes complete files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def jsonl_bytes(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def json_array_bytes(records: list[dict[str, Any]]) -> bytes:
    """A JSON array with one record per line (the shape of the published Evol-instruction-66k file)."""
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    return f"[\n{body}\n]\n".encode()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def yaml_string(value: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is a subset of it)."""
    return json.dumps(value)
