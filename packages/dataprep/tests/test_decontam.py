"""Decontamination: HumanEval n-gram and entry-point rules against the package's data; MBPP from shared data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mft_dataprep.decontam import Decontaminator, docstring_words, load_humaneval, load_mbpp, ngrams
from mft_dataprep.words import _NON_ASCII_SPACE, RecordWords, word_hashes, words

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("MFT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval(10)


def _problems():
    import gzip

    from mft_dataprep.decontam import humaneval_path

    with gzip.open(humaneval_path(), "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_ngrams_hand_computed():
    assert words("Def f(x):  return X+1") == ["def", "f", "x", "return", "x", "1"]
    assert ngrams(["a", "b", "c", "d"], 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert ngrams(["a", "b"], 3) == set()


def test_docstring_words_drop_doctests_and_stopwords():
    prompt = 'def f(x):\n    """ Return the sorted unique elements in a list\n    >>> f([5, 3, 5])\n    [3, 5]\n    """\n'
    assert docstring_words(prompt) == frozenset({"sorted", "unique", "elements"})


def test_every_canonical_solution_is_caught_and_counts_are_per_benchmark(humaneval):
    dc = Decontaminator([humaneval], 10, 0.5)
    problems = _problems()
    assert len(problems) == 164
    caught = sum(dc.check([("user", "Solve it."), ("assistant", p["prompt"] + p["canonical_solution"])]) is not None
                 for p in problems)
    assert caught == 164


def test_paraphrased_docstring_with_entry_point_is_caught(humaneval):
    dc = Decontaminator([humaneval], 10, 0.5)
    text = ("Implement below_threshold: you're given list l and threshold t; return True if all numbers in the "
            "list l are below threshold t.")
    assert dc.check([("user", text), ("assistant", "def below_threshold(l, t): ...")]) is not None
    # The same name alone, in unrelated code, is not contamination.
    assert dc.check([("user", "Rename the helper."), ("assistant", "below_threshold = 3")]) is None


def test_clean_record_passes(humaneval):
    dc = Decontaminator([humaneval], 10, 0.5)
    assert dc.check([("user", "Write a function that reverses a linked list in place."),
                     ("assistant", "def reverse(head):\n    prev = None\n    while head:\n        head.next, prev, "
                                   "head = prev, head, head.next\n    return prev")]) is None


def test_mbpp_from_shared_data():
    path = SHARED / "codefuse-eval" / "mbpp_x.jsonl"
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing (required under CI=true)")
        pytest.skip(f"shared data not found at {path}")
    bench = load_mbpp(path, 10)
    dc = Decontaminator([bench], 10, 0.5)
    first = json.loads(path.open().readline())
    assert dc.check([("user", first["prompt"]), ("assistant", first["canonical_solution"])])[0] == "mbpp"
    assert dc.check([("user", "hello there"), ("assistant", "print('hi')")]) is None


def test_non_ascii_space_list_is_every_unicode_space():
    assert set(_NON_ASCII_SPACE) == {chr(i) for i in range(0x110000) if chr(i).isspace()} - set(" \t\n\r\x0b\x0c")


def test_record_words_split_bytes_like_words():
    # bytes.split only knows ASCII whitespace: the separator table must make the two splits agree everywhere.
    text = ("Grüße\u3000naïve\x1cdata\u2028ǅx İstanbul\u00a0ﬁle\x85end\u2009x,y(z)\t数据\x0bq" + _NON_ASCII_SPACE
            + "tail")
    rw = RecordWords.of_text(text)
    assert rw.words() == words(text)
    assert rw.words(2, 4) == words(text)[2:4]
    assert rw.hashes.tolist() == word_hashes(words(text)).tolist() == RecordWords.of_words(words(text)).hashes.tolist()


def test_check_words_same_as_check(humaneval):
    dc = Decontaminator([humaneval], 10, 0.5)
    p = _problems()[3]
    for messages in ([("user", "Solve it."), ("assistant", p["prompt"] + p["canonical_solution"])],
                     [("user", "hello there"), ("assistant", "print('hi')")]):
        text = "\n".join(c for _, c in messages)
        assert dc.check_words(RecordWords.of_text(text)) == dc.check_tokens(words(text)) == dc.check(messages)


def test_check_many_same_as_check_words(humaneval):
    dc = Decontaminator([humaneval], 10, 0.5)
    problems = _problems()
    texts = ["", "short text", problems[3]["prompt"] + problems[3]["canonical_solution"], "hello there " * 30,
             "def below_threshold(l, t): " + problems[52]["prompt"], "x", problems[7]["canonical_solution"]]
    rws, all_hashes, offsets = RecordWords.many([RecordWords.split_text(t) for t in texts])
    verdicts = dc.check_many(rws, all_hashes, offsets)
    assert verdicts == [dc.check_words(RecordWords.of_text(t)) for t in texts]
    assert sum(v is not None for v in verdicts) >= 2
