"""ShareGPT: {"conversations": [{"from": human|gpt|system, "value": ...}, ...]}, optional top-level "system"."""

from __future__ import annotations

from typing import Any

from ..records import Message, Rejected
from .common import map_role, text_field, turn_list


def convert_sharegpt(obj: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    if "system" in obj:
        messages.append(("system", text_field(obj, "system", "top level")))
    for i, turn in enumerate(turn_list(obj, "conversations")):
        if not isinstance(turn, dict):
            raise Rejected("bad_field_type", f"conversations[{i}] must be an object")
        where = f"conversations[{i}]"
        messages.append((map_role(turn.get("from"), where), text_field(turn, "value", where)))
    return messages
