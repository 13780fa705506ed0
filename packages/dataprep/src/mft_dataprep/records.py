"""The small value types passed between stages: a raw item read from a file, a rejection, a normalised record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Message = tuple[str, str]  # (role, content) with role in system/user/assistant


class Rejected(Exception):
    """A record that cannot be carried forward. `reason` is a stable machine-readable code, `detail` for people."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class RawItem:
    """One record as read from a container: the parsed object, or the error that stopped parsing it.

    `index` is the 1-based line number for JSON Lines and the 0-based position for JSON arrays, Parquet rows and
    text files (see `location`). `raw` is the record's text as it was in the file (invalid bytes shown as backslash
    escapes).
    """

    index: int
    obj: Any
    raw: str
    error: Rejected | None = None
    check_surrogates: bool = True  # False when the text came from strict UTF-8 decoding without \u escapes


@dataclass(slots=True)
class Record:
    """A validated, normalised record before dedup, decontamination and splitting."""

    task: str
    source: str
    source_index: int
    messages: list[Message]
    raw: str


def location(source: str, index: int, container: str) -> str:
    """How a record's place is written everywhere (rejects, `show`, errors, stats): `file:line` with the 1-based
    line number for JSON Lines, `file[index]` with the 0-based element or row index for JSON arrays and Parquet,
    and the file alone for a text file (one record per file)."""
    if container == "jsonl":
        return f"{source}:{index}"
    if container == "text":
        return source
    return f"{source}[{index}]"
