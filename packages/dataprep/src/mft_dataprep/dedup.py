"""Deduplication across all tasks: exact (whitespace- and case-normalised) and near (MinHash LSH).

The first record seen keeps its place (tasks in config order, sources in order, records in file order); later
copies are counted as duplicates of it. Near dedup compares k-word shingles of the record's words (lower-cased,
punctuation as separators, the same words decontamination uses). Both indexes grow with the number of kept
records (a 16-byte digest each for exact dedup, one 64-bit key per LSH band for near dedup); nothing else does.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
from datasketch import MinHash, MinHashLSH

from .decontam import words
from .records import Message

_SEP = "\x1f"


def exact_key(messages: list[Message]) -> bytes:
    """Digest of the conversation with whitespace collapsed and case folded (roles included)."""
    text = _SEP.join(f"{role}:{' '.join(content.split())}" for role, content in messages).lower()
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class ExactDeduper:
    def __init__(self) -> None:
        self._seen: dict[bytes, str] = {}

    def first_seen(self, key: bytes, record_id: str) -> str | None:
        """The id of the earlier record with this key, or None (and remember this one)."""
        earlier = self._seen.get(key)
        if earlier is None:
            self._seen[key] = record_id
        return earlier


# Shingle hashing is ours, not datasketch's default: its per-shingle SHA-1 in Python cost ~1 ms per 400-word
# record here. We hash each word once (CRC-32, at C speed through `map`) and combine k consecutive word hashes
# with numpy; the permutations, signatures and the LSH index remain datasketch's. CRC-32 rather than Python's
# `hash`, which is seeded per process: signatures must be identical on every run for byte-identical outputs.
_MIX = np.uint64(0x9E3779B1)
_MASK = np.uint64(0xFFFFFFFF)


def shingle_hashes(words: list[str], k: int) -> list[int]:
    """32-bit hashes of the k-word shingles of `words` (see `decontam.words`); one shingle if shorter."""
    if not words:
        return []
    word_hashes = np.fromiter(map(zlib.crc32, map(str.encode, words)), dtype=np.uint64, count=len(words))
    n = len(words) - k + 1
    if n <= 0:
        acc = np.zeros(1, dtype=np.uint64)
        for h in word_hashes:
            acc = ((acc * _MIX) + h) & _MASK
        return acc.tolist()
    acc = word_hashes[:n].copy()
    for j in range(1, k):
        acc = ((acc * _MIX) + word_hashes[j : j + n]) & _MASK
    return acc.tolist()


class NearDeduper:
    """MinHash LSH: a record whose estimated Jaccard similarity to a kept one reaches `threshold` is a duplicate.

    Signatures are datasketch `MinHash`es, and the band/row split (b bands of r rows) is the one datasketch's
    `MinHashLSH` picks for the threshold. The band index is ours: datasketch's keeps, per band bucket, a set of
    all keys (about 2.3 KB per record measured here at 128 permutations, 8 bands), while we only need to know
    whether some earlier record shares a bucket, so one dict maps each band's 64-bit digest to the first record
    id (about 0.7 KB per record, the id string shared with the exact-dedup index).
    """

    def __init__(self, threshold: float, num_perm: int, shingle_words: int, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        params = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.bands, self.rows = params.b, params.r
        self._buckets: dict[int, str] = {}
        self._permutations = MinHash(num_perm=num_perm, seed=seed).permutations

    def _band_keys(self, signature: MinHash) -> list[int]:
        hv = signature.hashvalues
        r = self.rows
        return [
            int.from_bytes(hashlib.blake2b(hv[i * r : (i + 1) * r].tobytes(), digest_size=8,
                                           salt=i.to_bytes(2, "little")).digest(), "little")
            for i in range(self.bands)
        ]

    def signature(self, messages: list[Message]) -> MinHash:
        return self.signature_of_words(words("\n".join(content for _, content in messages)))

    def signature_of_words(self, tokens: list[str]) -> MinHash:
        m = MinHash(num_perm=self.num_perm, hashfunc=int, permutations=self._permutations, scheme="affine32")
        m.update_batch(shingle_hashes(tokens, self.shingle_words))
        return m

    def first_similar(self, signature: MinHash) -> str | None:
        """The first kept record sharing a band bucket with `signature` (in band order), or None."""
        for key in self._band_keys(signature):
            earlier = self._buckets.get(key)
            if earlier is not None:
                return earlier
        return None

    def add(self, record_id: str, signature: MinHash) -> None:
        for key in self._band_keys(signature):
            self._buckets.setdefault(key, record_id)

    def check_and_add(self, record_id: str, signature: MinHash) -> str | None:
        """`first_similar`, and when there is none, `add` (computing the band keys once)."""
        keys = self._band_keys(signature)
        for key in keys:
            earlier = self._buckets.get(key)
            if earlier is not None:
                return earlier
        for key in keys:
            self._buckets[key] = record_id
        return None
