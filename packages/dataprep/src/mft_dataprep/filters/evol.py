"""The Evol-instruction-66k quality rules (docs/reference.md §1) for pair-format code data.

Rejects an instruction under 10 or over 1000 words, an output under 50 or over 2000 words, an output with zero or
several fenced code blocks, code under 3 or over 100 lines, or over 200 words of prose before the code. Words are
whitespace-separated tokens; the instruction is every user turn, the output every assistant turn.
"""

from __future__ import annotations

from ..config import QualityConfig
from ..records import Message, Rejected

QUALITY_REASONS: dict[str, str] = {
    "quality_instruction_too_short": "instruction has fewer than min_instruction_words words",
    "quality_instruction_too_long": "instruction has more than max_instruction_words words",
    "quality_output_too_short": "output has fewer than min_output_words words",
    "quality_output_too_long": "output has more than max_output_words words",
    "quality_code_block_count": "output has zero or several fenced code blocks",
    "quality_code_too_short": "the code block has fewer than min_code_lines lines",
    "quality_code_too_long": "the code block has more than max_code_lines lines",
    "quality_prose_before_code": "more than max_prose_words_before_code words before the code block",
}

_FENCES = ("```", "~~~")


def _fence_lines(text: str) -> list[tuple[int, int, int, str]]:
    """(line start, fence start, line end, fence) of every line that starts, after spaces and tabs, with a fence."""
    found = []
    for fence in _FENCES:
        i = text.find(fence)
        while i != -1:
            start = text.rfind("\n", 0, i) + 1
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            if not text[start:i].strip(" \t"):
                found.append((start, i, end, fence))
            i = text.find(fence, end)  # only a line's first non-blank characters can open or close a block
    found.sort()
    return found


def code_blocks(text: str) -> list[tuple[int, str]]:
    """(start offset, body) of every fenced code block in markdown text.

    A block opens at a line that is `[ \t]*` then ``` or ~~~ then anything (an info string) and ends at the next
    line that is `[ \t]*`, the same fence, `[ \t]*`; blocks do not overlap. This is the regex
    `^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$` (MULTILINE, DOTALL) under `finditer`, done with `str.find`
    because the regex's lazy body tries a match at every character (a test compares the two).
    """
    lines = _fence_lines(text)
    blocks = []
    pos = 0
    for k, (start, _fence_at, end, fence) in enumerate(lines):
        if start < pos or end == len(text):  # inside the previous block, or no newline after the opening line
            continue
        for c_start, c_fence_at, c_end, c_fence in lines[k + 1 :]:
            if c_fence == fence and not text[c_fence_at + 3 : c_end].strip(" \t"):
                blocks.append((start, text[end + 1 : c_start]))
                pos = c_end
                break
    return blocks


def check_quality(messages: list[Message], rules: QualityConfig, splits: list[list[str]] | None = None) -> None:
    """Raise `Rejected` with the first Evol rule the conversation breaks.

    `splits`, when given, is `[content.split() for _, content in messages]` (the caller shares it with
    `dedup.exact_key`); turns are joined with whitespace, so the word counts add up per turn.
    """
    if splits is None:
        splits = [content.split() for _, content in messages]
    n_instr = sum(len(ws) for (r, _), ws in zip(messages, splits, strict=True) if r == "user")
    if n_instr < rules.min_instruction_words:
        raise Rejected("quality_instruction_too_short", f"{n_instr} words < {rules.min_instruction_words}")
    if n_instr > rules.max_instruction_words:
        raise Rejected("quality_instruction_too_long", f"{n_instr} words > {rules.max_instruction_words}")
    n_out = sum(len(ws) for (r, _), ws in zip(messages, splits, strict=True) if r == "assistant")
    if n_out < rules.min_output_words:
        raise Rejected("quality_output_too_short", f"{n_out} words < {rules.min_output_words}")
    if n_out > rules.max_output_words:
        raise Rejected("quality_output_too_long", f"{n_out} words > {rules.max_output_words}")
    if not rules.require_one_code_block:
        return
    output = "\n".join(c for r, c in messages if r == "assistant")
    blocks = code_blocks(output) if "```" in output or "~~~" in output else []
    if len(blocks) != 1:
        raise Rejected("quality_code_block_count", f"{len(blocks)} fenced code blocks, expected exactly 1")
    start, body = blocks[0]
    n_lines = len(body.rstrip("\n").split("\n")) if body.strip() else 0
    if n_lines < rules.min_code_lines:
        raise Rejected("quality_code_too_short", f"{n_lines} code lines < {rules.min_code_lines}")
    if n_lines > rules.max_code_lines:
        raise Rejected("quality_code_too_long", f"{n_lines} code lines > {rules.max_code_lines}")
    prose = len(output[:start].split())
    if prose > rules.max_prose_words_before_code:
        raise Rejected("quality_prose_before_code", f"{prose} words > {rules.max_prose_words_before_code}")
