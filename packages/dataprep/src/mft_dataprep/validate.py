"""Structural validation and normalisation of converted messages, the same rules for every input format.

A conversation is: an optional system turn first, then user and assistant alternating, starting with user and
ending with assistant; no turn empty; valid UTF-8; at most `max_chars` characters in all. Content is normalised
by turning CRLF into LF and stripping surrounding whitespace (chat) or only CRLF (text files, where leading
indentation is meaningful).
"""

from __future__ import annotations

from .records import Message, Rejected

REJECTION_REASONS: dict[str, str] = {
    "invalid_utf8": "bytes that are not valid UTF-8 (or a lone surrogate escape)",
    "invalid_json": "a line or array element that is not valid JSON",
    "not_an_object": "a JSON value that is not an object",
    "unknown_format": "a record whose keys match no supported format",
    "missing_field": "a required field is absent",
    "bad_field_type": "a field has the wrong JSON type",
    "no_turns": "an empty turn list",
    "unknown_role": "a role outside system/user/assistant and their aliases",
    "system_not_first": "a system turn after the first position",
    "first_not_user": "the first non-system turn is not from the user",
    "roles_not_alternating": "two consecutive turns from the same role",
    "last_not_assistant": "the conversation does not end with an assistant turn",
    "empty_content": "a turn (or text file) with no non-whitespace content",
    "too_long": "more characters than max_chars",
}


def _check_encodable(content: str) -> None:
    try:
        content.encode("utf-8")
    except UnicodeEncodeError as err:
        raise Rejected("invalid_utf8", f"character {err.start}: {err.reason}") from None


def normalise_chat(messages: list[Message], max_chars: int, check_surrogates: bool = True) -> list[Message]:
    """Validate a conversation and return it normalised, or raise `Rejected` with the first rule it breaks."""
    out: list[Message] = []
    total = 0
    expected = "user"
    for i, (role, content) in enumerate(messages):
        if check_surrogates:
            _check_encodable(content)
        if "\r" in content:
            content = content.replace("\r\n", "\n")
        content = content.strip()
        if not content:
            raise Rejected("empty_content", f"turn {i} ({role}) is empty")
        total += len(content)
        if role == "system":
            if i != 0:
                raise Rejected("system_not_first", f"system turn at position {i}")
        elif role != expected:
            if not out or out[-1][0] == "system":
                raise Rejected("first_not_user", f"turn {i} is {role}, expected user first")
            raise Rejected("roles_not_alternating", f"turn {i} is {role} after {out[-1][0]}")
        else:
            expected = "assistant" if role == "user" else "user"
        out.append((role, content))
    if not out:
        raise Rejected("no_turns", "no turns")
    if out[-1][0] != "assistant":
        raise Rejected("last_not_assistant", f"last turn is {out[-1][0]}")
    if total > max_chars:
        raise Rejected("too_long", f"{total} characters > max_chars {max_chars}")
    return out


def normalise_text(text: str, max_chars: int, check_surrogates: bool = True) -> list[Message]:
    """A text-kind record: the file's text as one assistant message (loss on every token downstream)."""
    if check_surrogates:
        _check_encodable(text)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text.strip():
        raise Rejected("empty_content", "file has no non-whitespace content")
    if len(text) > max_chars:
        raise Rejected("too_long", f"{len(text)} characters > max_chars {max_chars}")
    return [("assistant", text)]
