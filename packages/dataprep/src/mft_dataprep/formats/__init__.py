"""Record formats: detect which shape a file's records have and convert each record to role/content messages.

Each converter takes one parsed JSON object and returns `[(role, content), ...]` with roles system/user/assistant,
or raises `Rejected` naming what is missing or wrong. Structural rules (alternation, empty turns) are checked
afterwards, the same way for every format, in `mft_dataprep.validate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..records import Message, Rejected
from .chat_rounds import convert_chat_rounds
from .openai import convert_openai
from .pairs import PAIR_SHAPES, convert_alpaca, convert_pairs
from .sharegpt import convert_sharegpt

Converter = Callable[[dict[str, Any]], list[Message]]

CONVERTERS: dict[str, Converter] = {
    "chat_rounds": convert_chat_rounds,
    "sharegpt": convert_sharegpt,
    "openai": convert_openai,
    "alpaca": convert_alpaca,
    "pairs": convert_pairs,
}

PAIR_FORMATS = frozenset({"alpaca", "pairs"})


def detect_format(obj: Any) -> str | None:
    """The format a record's keys indicate, or None when no known shape matches."""
    if not isinstance(obj, dict):
        return None
    if "chat_rounds" in obj:
        return "chat_rounds"
    if "conversations" in obj:
        return "sharegpt"
    if "messages" in obj:
        return "openai"
    if "instruction" in obj and "output" in obj and "input" in obj:
        return "alpaca"
    for prompt_key, answer_key in PAIR_SHAPES:
        if prompt_key in obj and answer_key in obj:
            return "pairs"
    return None


def convert(format_name: str, obj: Any) -> list[Message]:
    if not isinstance(obj, dict):
        raise Rejected("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    return CONVERTERS[format_name](obj)
