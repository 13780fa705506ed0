"""Structural validation and the Evol quality rules: each rule's rejection reason and the normalisation."""

from __future__ import annotations

import random
import re

import pytest
from mft_dataprep.config import QualityConfig
from mft_dataprep.filters.evol import check_quality, code_blocks
from mft_dataprep.records import Rejected
from mft_dataprep.validate import normalise_chat, normalise_text


def test_normalisation_strips_and_converts_crlf():
    out = normalise_chat([("system", " s "), ("user", "q\r\nline2 "), ("assistant", "\n  a\r\n")], 1000)
    assert out == [("system", "s"), ("user", "q\nline2"), ("assistant", "a")]


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([("user", "q"), ("system", "s"), ("assistant", "a")], "system_not_first"),
        ([("assistant", "a")], "first_not_user"),
        ([("system", "s"), ("assistant", "a")], "first_not_user"),
        ([("user", "q"), ("user", "q2"), ("assistant", "a")], "roles_not_alternating"),
        ([("user", "q"), ("assistant", "a"), ("assistant", "b")], "roles_not_alternating"),
        ([("user", "q"), ("assistant", "a"), ("user", "q2")], "last_not_assistant"),
        ([("system", "s")], "last_not_assistant"),
        ([("user", "q"), ("assistant", "  \n ")], "empty_content"),
        ([("user", "bad \ud800"), ("assistant", "a")], "invalid_utf8"),
        ([("user", "q" * 60), ("assistant", "a" * 50)], "too_long"),
        ([], "no_turns"),
    ],
)
def test_structural_rejections(messages, reason):
    with pytest.raises(Rejected) as err:
        normalise_chat(messages, max_chars=100)
    assert err.value.reason == reason


def test_text_kind_keeps_indentation_and_checks_length():
    assert normalise_text("    x = 1\r\n", 100) == [("assistant", "    x = 1\n")]
    with pytest.raises(Rejected, match="empty_content"):
        normalise_text(" \n\t", 100)
    with pytest.raises(Rejected, match="too_long"):
        normalise_text("x" * 101, 100)


def _pair(instruction_words: int, prose_words: int, code_lines: int, after_words: int, blocks: int = 1):
    code = "\n".join(f"x{i} = {i}" for i in range(code_lines))
    block = f"```python\n{code}\n```"
    output = " ".join(["prose"] * prose_words) + "\n" + "\n\n".join([block] * blocks) + "\n" + " ".join(["w"] * after_words)
    return [("user", " ".join(["word"] * instruction_words)), ("assistant", output)]


RULES = QualityConfig()


def test_quality_accepts_a_typical_record():
    check_quality(_pair(12, 20, 5, 40), RULES)


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        (_pair(9, 20, 5, 40), "quality_instruction_too_short"),
        (_pair(1001, 20, 5, 40), "quality_instruction_too_long"),
        (_pair(12, 5, 5, 5), "quality_output_too_short"),
        (_pair(12, 20, 5, 2000), "quality_output_too_long"),
        (_pair(12, 20, 5, 60, blocks=0), "quality_code_block_count"),
        (_pair(12, 20, 5, 60, blocks=2), "quality_code_block_count"),
        (_pair(12, 20, 2, 60), "quality_code_too_short"),
        (_pair(12, 20, 101, 60), "quality_code_too_long"),
        (_pair(12, 201, 5, 10), "quality_prose_before_code"),
    ],
)
def test_quality_rejections(messages, reason):
    with pytest.raises(Rejected) as err:
        check_quality(messages, RULES)
    assert err.value.reason == reason


def test_quality_rules_are_configurable():
    loose = QualityConfig(min_instruction_words=1, require_one_code_block=False)
    check_quality(_pair(2, 20, 5, 60, blocks=0), loose)


def test_code_blocks_finds_fences_with_info_strings():
    text = "intro\n```python\na\nb\n```\nmid\n~~~\nc\n~~~\n"
    assert [body for _, body in code_blocks(text)] == ["a\nb\n", "c\n"]


def test_code_blocks_match_the_fence_regex():
    # code_blocks is a str.find version of this regex (the rule as first written); random fence soup must agree.
    fence_re = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
    rng = random.Random(0)
    pieces = ["```", "~~~", "````", "\n", " ", "\t", "x", "py", "\r", "`", "~", "```python", "\n```\n", " ``` ", "\x0b"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        assert code_blocks(text) == [(m.start(), m.group(2)) for m in fence_re.finditer(text)], repr(text)
