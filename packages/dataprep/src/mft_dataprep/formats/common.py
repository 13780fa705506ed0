"""Helpers shared by the format converters: role mapping and typed field access."""

from __future__ import annotations

from typing import Any

from ..records import Rejected

ROLE_ALIASES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "bot": "assistant",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
}


def map_role(role: Any, where: str) -> str:
    if not isinstance(role, str) or role.strip().lower() not in ROLE_ALIASES:
        raise Rejected("unknown_role", f"{where}: role {role!r} is not one of {sorted(ROLE_ALIASES)}")
    return ROLE_ALIASES[role.strip().lower()]


def text_field(obj: dict[str, Any], key: str, where: str) -> str:
    if key not in obj:
        raise Rejected("missing_field", f"{where}: no {key!r} field")
    value = obj[key]
    if not isinstance(value, str):
        raise Rejected("bad_field_type", f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def turn_list(obj: dict[str, Any], key: str) -> list[Any]:
    if key not in obj:
        raise Rejected("missing_field", f"no {key!r} field")
    turns = obj[key]
    if not isinstance(turns, list):
        raise Rejected("bad_field_type", f"{key!r} must be a list, got {type(turns).__name__}")
    if not turns:
        raise Rejected("no_turns", f"{key!r} is empty")
    return turns
