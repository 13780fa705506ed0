"""Format detection and conversion: every supported shape, role aliases, and the rejections each raises."""

from __future__ import annotations

import pytest
from mft_dataprep.formats import convert, detect_format
from mft_dataprep.records import Rejected


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ({"chat_rounds": []}, "chat_rounds"),
        ({"conversations": []}, "sharegpt"),
        ({"messages": []}, "openai"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"instruction": "a", "output": "b"}, "pairs"),
        ({"prompt": "a", "answer": "b"}, "pairs"),
        ({"prompt": "a", "response": "b"}, "pairs"),
        ({"input": "a", "output": "b"}, "pairs"),
        ({"question": "a", "answer": "b"}, "pairs"),
        ({"query": "a", "answer": "b"}, "pairs"),
        ({"text": "a"}, None),
        (["not", "a", "dict"], None),
    ],
)
def test_detect_format(record, fmt):
    assert detect_format(record) == fmt


def test_chat_rounds_role_aliases():
    rec = {"chat_rounds": [{"role": "system", "content": "s"}, {"role": "human", "content": "q"},
                           {"role": "bot", "content": "a"}, {"role": "user", "content": "q2"},
                           {"role": "gpt", "content": "a2"}, {"role": "Human", "content": "q3"},
                           {"role": "assistant", "content": "a3"}]}
    assert convert("chat_rounds", rec) == [("system", "s"), ("user", "q"), ("assistant", "a"), ("user", "q2"),
                                           ("assistant", "a2"), ("user", "q3"), ("assistant", "a3")]


def test_sharegpt_and_openai():
    sg = {"system": "sys", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert convert("sharegpt", sg) == [("system", "sys"), ("user", "q"), ("assistant", "a")]
    oa = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert convert("openai", oa) == [("user", "q"), ("assistant", "a")]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"instruction": "i", "output": "o"}, [("user", "i"), ("assistant", "o")]),
        ({"prompt": "p", "response": "r", "system": "s"}, [("system", "s"), ("user", "p"), ("assistant", "r")]),
        ({"question": "q", "answer": "a"}, [("user", "q"), ("assistant", "a")]),
        ({"query": "q", "answer": "a"}, [("user", "q"), ("assistant", "a")]),
        ({"input": "x", "output": "y"}, [("user", "x"), ("assistant", "y")]),
    ],
)
def test_pair_shapes(record, expected):
    assert convert("pairs", record) == expected


def test_alpaca_joins_input_and_skips_empty_input():
    assert convert("alpaca", {"instruction": "Sort.", "input": "[3, 1]", "output": "[1, 3]"}) == [
        ("user", "Sort.\n\n[3, 1]"), ("assistant", "[1, 3]")]
    assert convert("alpaca", {"instruction": "Sort.", "input": "  ", "output": "o"}) == [
        ("user", "Sort."), ("assistant", "o")]


@pytest.mark.parametrize(
    ("fmt", "record", "reason"),
    [
        ("chat_rounds", {"chat_rounds": "x"}, "bad_field_type"),
        ("chat_rounds", {"chat_rounds": []}, "no_turns"),
        ("chat_rounds", {"data": 1}, "missing_field"),
        ("chat_rounds", {"chat_rounds": [{"role": "tool", "content": "x"}]}, "unknown_role"),
        ("chat_rounds", {"chat_rounds": [{"role": "human", "content": 3}]}, "bad_field_type"),
        ("chat_rounds", {"chat_rounds": [{"role": "human"}]}, "missing_field"),
        ("sharegpt", {"conversations": [{"from": "narrator", "value": "x"}]}, "unknown_role"),
        ("openai", {"messages": [{"role": "tool", "content": "x"}]}, "unknown_role"),
        ("pairs", {"instruction": 1, "output": "o"}, "bad_field_type"),
        ("pairs", {"instruction": "i"}, "missing_field"),
        ("alpaca", {"instruction": "i", "input": 3, "output": "o"}, "bad_field_type"),
        ("openai", ["a list"], "not_an_object"),
    ],
)
def test_conversion_rejections(fmt, record, reason):
    with pytest.raises(Rejected) as err:
        convert(fmt, record)
    assert err.value.reason == reason
