"""Content fingerprints of a stage's inputs, so an unchanged stage is skipped and a changed one says why.

A stage's key is the sha256 of: the tool name, its fully resolved config (canonical JSON), the keys of the earlier
stages it refers to, and a fingerprint of every file or folder its config names that is not an earlier stage's output.
Files up to `CONTENT_LIMIT` bytes are hashed by content; larger files and whole folders (a 60 GB base model, say) by
relative path, size and modification time, which is what a user who replaces them changes too.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mftcoder.pipeline import config_strings

CONTENT_LIMIT = 64 * 1024 * 1024
GLOB_CHARS = set("*?[")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_fingerprint(path: Path) -> str:
    """sha256 of the content for files up to CONTENT_LIMIT bytes, else of (size, mtime)."""
    stat = path.stat()
    if stat.st_size > CONTENT_LIMIT:
        return sha256_text(f"large:{stat.st_size}:{stat.st_mtime_ns}")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_fingerprint(path: Path) -> str:
    """sha256 over every file's relative path, size and mtime under a folder (hidden bookkeeping included)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            try:
                stat = full.stat()
            except FileNotFoundError:
                continue
            digest.update(f"{full.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def path_fingerprint(path: Path) -> str:
    return dir_fingerprint(path) if path.is_dir() else file_fingerprint(path)


def referenced_paths(config: Any, base_dir: Path, exclude: list[Path]) -> dict[str, str]:
    """Fingerprints of the existing files/folders (and glob matches) named by strings in a config.

    Strings that do not name an existing path are ignored (they are names, model ids, options). Paths inside any of
    `exclude` (the outputs of earlier stages, and this stage's own output) are left out: earlier stages enter the key
    through their own keys instead.
    """
    excluded = [p.resolve() for p in exclude]
    found: dict[str, str] = {}
    for text in config_strings(config):
        if not text or "\n" in text or len(text) > 4096:
            continue
        candidates: list[Path]
        if GLOB_CHARS & set(text):
            pattern = text if os.path.isabs(text) else str(base_dir / text)
            candidates = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        else:
            candidate = Path(text) if os.path.isabs(text) else base_dir / text
            candidates = [candidate]
        for candidate in candidates:
            try:
                if not candidate.exists():
                    continue
            except OSError:
                continue
            resolved = candidate.resolve()
            if any(resolved == ex or ex in resolved.parents for ex in excluded):
                continue
            found[str(resolved)] = path_fingerprint(resolved)
    return dict(sorted(found.items()))


def stage_key(tool: str, config: Any, upstream_keys: dict[str, str], inputs: dict[str, str], version: str) -> str:
    return sha256_text(
        canonical_json(
            {"tool": tool, "config": config, "upstream": upstream_keys, "inputs": inputs, "version": version}
        )
    )

