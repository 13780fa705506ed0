"""The Evol-instruction-66k quality rules (REFERENCE.md §1) for pair-format code data.

Rejects an instruction under 10 or over 1000 words, an output under 50 or over 2000 words, an output with zero or
several fenced code blocks, code under 3 or over 100 lines, or over 200 words of prose before the code. Words are
whitespace-separated tokens; the instruction is every user turn, the output every assistant turn.
"""

from __future__ import annotations

import re

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

# A fenced block: an opening fence (``` or ~~~, optional info string) on its own line, up to a matching fence.
_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)


def code_blocks(text: str) -> list[tuple[int, str]]:
    """(start offset, body) of every fenced code block in markdown text."""
    return [(m.start(), m.group(2)) for m in _FENCE.finditer(text)]


def check_quality(messages: list[Message], rules: QualityConfig) -> None:
    """Raise `Rejected` with the first Evol rule the conversation breaks."""
    instruction = " ".join(c for r, c in messages if r == "user")
    output = "\n".join(c for r, c in messages if r == "assistant")
    n_instr = len(instruction.split())
    if n_instr < rules.min_instruction_words:
        raise Rejected("quality_instruction_too_short", f"{n_instr} words < {rules.min_instruction_words}")
    if n_instr > rules.max_instruction_words:
        raise Rejected("quality_instruction_too_long", f"{n_instr} words > {rules.max_instruction_words}")
    n_out = len(output.split())
    if n_out < rules.min_output_words:
        raise Rejected("quality_output_too_short", f"{n_out} words < {rules.min_output_words}")
    if n_out > rules.max_output_words:
        raise Rejected("quality_output_too_long", f"{n_out} words > {rules.max_output_words}")
    if not rules.require_one_code_block:
        return
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
