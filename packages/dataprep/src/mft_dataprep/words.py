"""Words and their hashes, shared by near de-duplication (`dedup.py`) and decontamination (`decontam.py`).

Words are lower-cased runs of letters, digits and underscores, so formatting and punctuation do not hide a copy;
each word is hashed once (CRC-32 of its UTF-8 bytes, fixed across processes unlike Python's seeded `hash`), and
n-grams of words are rolling 64-bit hashes of those.
"""

from __future__ import annotations

import string
import zlib
from itertools import chain

import numpy as np

# Punctuation becomes a separator: on ASCII text this splits like the regex \w+ (letters, digits, underscore),
# at about three times its speed. Unicode whitespace that is not ASCII whitespace is mapped to a space too: that
# changes nothing for `str.split`, and lets `RecordWords` split the UTF-8 bytes instead (bytes.split only knows
# ASCII whitespace) and get exactly the same words.
_NON_ASCII_SPACE = (  # every character `str.isspace` accepts beyond " \t\n\r\x0b\x0c" (a test checks the list)
    "\u001c\u001d\u001e\u001f\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_SEPARATORS = str.maketrans({c: " " for c in string.punctuation.replace("_", "") + _NON_ASCII_SPACE})


def words(text: str) -> list[str]:
    return text.lower().translate(_SEPARATORS).split()


def word_hashes(tokens: list[str]) -> np.ndarray:
    """CRC-32 of each word's UTF-8 bytes (as uint64): fixed across processes, unlike Python's seeded `hash`."""
    return np.fromiter(map(zlib.crc32, map(str.encode, tokens)), dtype=np.uint64, count=len(tokens))


class RecordWords:
    """A record's `words(...)` and their `word_hashes`, computed once and shared by decontamination and near dedup.

    The words are split from the UTF-8 bytes of the lower-cased, separator-mapped text (the same words as
    `words`, see `_SEPARATORS`) and hashed straight from those bytes; the words as `str` are only decoded when
    a caller asks for them.
    """

    __slots__ = ("parts", "hashes")

    def __init__(self, parts: list[bytes], hashes: np.ndarray | None = None) -> None:
        self.parts = parts
        self.hashes = np.fromiter(map(zlib.crc32, parts), dtype=np.uint64, count=len(parts)) if hashes is None \
            else hashes

    @staticmethod
    def split_text(text: str) -> list[bytes]:
        return text.lower().translate(_SEPARATORS).encode("utf-8").split()

    @classmethod
    def many(cls, parts_lists: list[list[bytes]]) -> tuple[list[RecordWords], np.ndarray, np.ndarray]:
        """RecordWords of several records hashed in one pass: (records, all hashes end to end, offsets), where
        record i's hashes are `all_hashes[offsets[i]:offsets[i + 1]]` (its `hashes` is that view)."""
        lengths = [len(parts) for parts in parts_lists]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        all_hashes = np.fromiter(map(zlib.crc32, chain.from_iterable(parts_lists)), dtype=np.uint64,
                                 count=int(offsets[-1]))
        records = [cls(parts, all_hashes[offsets[i] : offsets[i + 1]]) for i, parts in enumerate(parts_lists)]
        return records, all_hashes, offsets

    @classmethod
    def of_text(cls, text: str) -> RecordWords:
        return cls(cls.split_text(text))

    @classmethod
    def of_words(cls, tokens: list[str]) -> RecordWords:
        return cls([t.encode("utf-8") for t in tokens])

    def __len__(self) -> int:
        return len(self.parts)

    def words(self, start: int = 0, stop: int | None = None) -> list[str]:
        return [p.decode("utf-8") for p in self.parts[start:stop]]


ROLL = np.uint64(0x100000001B3)


def ngram_hashes_of(hashes: np.ndarray, n: int) -> np.ndarray:
    """Rolling 64-bit hashes of every n consecutive `word_hashes`."""
    if len(hashes) < n:
        return np.empty(0, dtype=np.uint64)
    m = len(hashes) - n + 1
    acc = hashes[:m].copy()
    for j in range(1, n):
        acc *= ROLL
        acc += hashes[j : j + m]
    return acc
