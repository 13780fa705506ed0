"""OpenAI chat messages: {"messages": [{"role": system|user|assistant, "content": ...}, ...]}."""

from __future__ import annotations

from typing import Any

from ..records import Message, Rejected
from .common import map_role, text_field, turn_list

_OPENAI_ROLES = frozenset({"system", "user", "assistant"})


def convert_openai(obj: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    for i, turn in enumerate(turn_list(obj, "messages")):
        if not isinstance(turn, dict):
            raise Rejected("bad_field_type", f"messages[{i}] must be an object")
        where = f"messages[{i}]"
        role = turn.get("role")
        if role not in _OPENAI_ROLES:  # tool/function turns have no place in SFT conversations here
            raise Rejected("unknown_role", f"{where}: role {role!r} is not one of {sorted(_OPENAI_ROLES)}")
        messages.append((map_role(role, where), text_field(turn, "content", where)))
    return messages
