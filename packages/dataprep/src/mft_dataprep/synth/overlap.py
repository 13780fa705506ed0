"""The held-out contamination check: no held-out prompt may appear in, or share an n-gram with, the training data.

Two tests, both on code tokens (identifiers, numbers, single punctuation characters; whitespace ignored):
- exact: the held-out prompt, whitespace-normalised, is a substring of a whitespace-normalised training record;
- n-gram: the prompt shares a run of `n` tokens with a training record, counting only runs that contain one of
  the problem's own identifiers (function or argument name). Runs made only of the fixed task wording, numbers
  and punctuation ("Write assert statements that test this function . def") are shared by every record of a task
  by design; they carry no information about a particular problem.
Training n-grams are kept as 8-byte BLAKE2b digests, so the index is a set of ints (deterministic across
processes, unlike Python's salted `hash`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|\S")
_SEP = "\x1f"


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def normalise(text: str) -> str:
    return " ".join(text.split())


def _digest(gram: Iterable[str]) -> int:
    return int.from_bytes(hashlib.blake2b(_SEP.join(gram).encode("utf-8"), digest_size=8).digest(), "big")


class TrainingIndex:
    """Everything the check needs to know about the training texts."""

    def __init__(self, texts: Iterable[str], n: int) -> None:
        self.n = n
        self._grams: set[int] = set()
        self.identifiers: set[str] = set()
        normalised: list[str] = []
        for text in texts:
            toks = tokens(text)
            self.identifiers.update(t for t in toks if t[0].isalpha() or t[0] == "_")
            for i in range(len(toks) - n + 1):
                self._grams.add(_digest(toks[i : i + n]))
            normalised.append(normalise(text))
        self._blob = "\n".join(normalised)

    def exact_hit(self, prompt: str) -> bool:
        return normalise(prompt) in self._blob

    def ngram_hits(self, prompt: str, identifiers: Iterable[str]) -> int:
        """How many of the prompt's n-grams that contain one of `identifiers` occur in training."""
        names = set(identifiers)
        toks = tokens(prompt)
        hits = 0
        for i in range(len(toks) - self.n + 1):
            gram = toks[i : i + self.n]
            if names.intersection(gram) and _digest(gram) in self._grams:
                hits += 1
        return hits

    def contaminated(self, prompt: str, identifiers: Iterable[str]) -> bool:
        return self.exact_hit(prompt) or self.ngram_hits(prompt, identifiers) > 0
