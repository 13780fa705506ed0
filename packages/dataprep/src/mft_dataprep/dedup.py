"""Deduplication across all tasks: exact (whitespace- and case-normalised) and near (MinHash LSH, datasketch).

Near dedup compares k-word shingles of the record's words (lower-cased, punctuation as separators), the same
words decontamination uses. The first record seen keeps its place (tasks in config order, sources in order, records in file order); later
copies are counted as duplicates of it. Both indexes hold only what they must: a 16-byte digest per kept record
for exact dedup, and datasketch's LSH band tables for near dedup.
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


def _band_digest(band: bytes) -> bytes:
    return hashlib.blake2b(band, digest_size=8).digest()


class NearDeduper:
    """MinHash LSH: a record whose estimated Jaccard similarity to a kept one reaches `threshold` is a duplicate."""

    def __init__(self, threshold: float, num_perm: int, shingle_words: int, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        # Band keys compressed to 8 bytes (instead of 4 bytes per band row): a smaller index, same candidates
        # except with probability ~2^-64 per pair.
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, hashfunc=_band_digest)
        self._permutations = MinHash(num_perm=num_perm, seed=seed).permutations

    def signature(self, messages: list[Message]) -> MinHash:
        return self.signature_of_words(words("\n".join(content for _, content in messages)))

    def signature_of_words(self, tokens: list[str]) -> MinHash:
        m = MinHash(num_perm=self.num_perm, hashfunc=int, permutations=self._permutations, scheme="affine32")
        m.update_batch(shingle_hashes(tokens, self.shingle_words))
        return m

    def first_similar(self, signature: MinHash) -> str | None:
        """The smallest matching earlier id (deterministic), or None."""
        matches = self._lsh.query(signature)
        return min(matches) if matches else None

    def add(self, record_id: str, signature: MinHash) -> None:
        self._lsh.insert(record_id, signature, check_duplication=False)
