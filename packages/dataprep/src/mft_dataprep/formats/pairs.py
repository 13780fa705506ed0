"""Single-turn pairs: instruction/output (Evol), prompt/answer, prompt/response, input/output, question/answer,
query/answer, ... each with an optional "system"; and Alpaca (instruction + optional input + output)."""

from __future__ import annotations

from typing import Any

from ..records import Message, Rejected
from .common import text_field

# (prompt key, answer key), most specific first: the first shape whose two keys are present wins.
PAIR_SHAPES: tuple[tuple[str, str], ...] = (
    ("instruction", "output"),
    ("instruction", "response"),
    ("prompt", "answer"),
    ("prompt", "response"),
    ("prompt", "completion"),
    ("question", "answer"),
    ("query", "answer"),
    ("query", "response"),
    ("input", "output"),
)


def _with_system(obj: dict[str, Any], user: str, assistant: str) -> list[Message]:
    messages: list[Message] = []
    if obj.get("system") is not None:
        messages.append(("system", text_field(obj, "system", "top level")))
    messages.append(("user", user))
    messages.append(("assistant", assistant))
    return messages


def convert_pairs(obj: dict[str, Any]) -> list[Message]:
    for prompt_key, answer_key in PAIR_SHAPES:
        if prompt_key in obj and answer_key in obj:
            return _with_system(
                obj, text_field(obj, prompt_key, "top level"), text_field(obj, answer_key, "top level")
            )
    shapes = ", ".join(f"{p}/{a}" for p, a in PAIR_SHAPES)
    raise Rejected("missing_field", f"no prompt/answer pair found (expected one of {shapes})")


def convert_alpaca(obj: dict[str, Any]) -> list[Message]:
    instruction = text_field(obj, "instruction", "top level")
    output = text_field(obj, "output", "top level")
    extra = obj.get("input")
    if extra is not None and not isinstance(extra, str):
        raise Rejected("bad_field_type", f"'input' must be a string, got {type(extra).__name__}")
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return _with_system(obj, user, output)
