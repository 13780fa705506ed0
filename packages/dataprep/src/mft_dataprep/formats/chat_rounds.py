"""MFTCoder / CodeExercise `chat_rounds`: [{"role": system|human|user|bot|assistant|gpt, "content": ...}, ...]."""

from __future__ import annotations

from typing import Any

from ..records import Message, Rejected
from .common import map_role, text_field, turn_list


def convert_chat_rounds(obj: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    for i, turn in enumerate(turn_list(obj, "chat_rounds")):
        if not isinstance(turn, dict):
            raise Rejected("bad_field_type", f"chat_rounds[{i}] must be an object")
        where = f"chat_rounds[{i}]"
        messages.append((map_role(turn.get("role"), where), text_field(turn, "content", where)))
    return messages
