"""Deduplication across all tasks: exact (whitespace- and case-normalised) and near (MinHash LSH).

The first record seen keeps its place (tasks in config order, sources in order, records in file order); later
copies are counted as duplicates of it. Near dedup compares k-word shingles of the record's words (lower-cased,
punctuation as separators, the same words decontamination uses). Both indexes grow with the number of kept
records (a 16-byte digest each for exact dedup, one 64-bit key per LSH band for near dedup); nothing else does.
"""

from __future__ import annotations

import hashlib
from hashlib import blake2b

import numpy as np
from datasketch import MinHash, MinHashLSH

from .records import Message
from .words import word_hashes, words

_SEP = "\x1f"


def exact_key(messages: list[Message], splits: list[list[str]] | None = None) -> bytes:
    """Digest of the conversation with whitespace collapsed and case folded (roles included).

    `splits`, when given, is `[content.split() for _, content in messages]`, shared with the quality rules.
    """
    if splits is None:
        splits = [content.split() for _, content in messages]
    text = _SEP.join(f"{role}:{' '.join(ws)}" for (role, _), ws in zip(messages, splits, strict=True)).lower()
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
# record here. We hash each word once (CRC-32 of its UTF-8 bytes, `words.RecordWords`, shared with
# decontamination) and combine k consecutive word hashes with numpy. CRC-32 rather than Python's `hash`, which is
# seeded per process: signatures must be identical on every run for byte-identical outputs.
_MIX = np.uint64(0x9E3779B1)
_MASK = np.uint64(0xFFFFFFFF)
_MAX32 = np.uint32(0xFFFFFFFF)
_BLOCK = 8192  # shingles per block in `minhash_values`, so a huge record needs ~4 MB per block, not per record


def shingles_of_hashes(word_hashes: np.ndarray, k: int) -> np.ndarray:
    """32-bit hashes (as uint64) of the k-word shingles of a record's `word_hashes`; one shingle if shorter."""
    if not len(word_hashes):
        return np.empty(0, dtype=np.uint64)
    n = len(word_hashes) - k + 1
    if n <= 0:
        acc = np.zeros(1, dtype=np.uint64)
        for h in word_hashes:
            acc = ((acc * _MIX) + h) & _MASK
        return acc
    acc = word_hashes[:n].copy()
    for j in range(1, k):
        acc *= _MIX
        acc += word_hashes[j : j + n]
        acc &= _MASK
    return acc


def shingle_hashes(words: list[str], k: int) -> list[int]:
    """32-bit hashes of the k-word shingles of `words` (see `words.words`); one shingle if shorter."""
    return shingles_of_hashes(word_hashes(words), k).tolist()


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, the pre-mix datasketch's affine32 scheme applies to every input hash."""
    hv ^= hv >> np.uint32(16)
    hv *= np.uint32(0x85EBCA6B)
    hv ^= hv >> np.uint32(13)
    hv *= np.uint32(0xC2B2AE35)
    hv ^= hv >> np.uint32(16)
    return hv


def minhash_values(shingles: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """The hash values of datasketch's `MinHash(scheme="affine32", hashfunc=int)` after `update_batch(shingles)`.

    The same arithmetic (fmix32, then a * h + b mod 2^32 per permutation, then the minimum) done directly in
    numpy: `update_batch` converts every value through a Python list and re-validates the permutations on every
    sketch, which cost more than the arithmetic. `tests/test_dedup_split.py` checks the values are identical.
    """
    a, b = permutations
    out = np.full(a.shape[0], _MAX32, dtype=np.uint32)
    for start in range(0, len(shingles), _BLOCK):
        hv = _fmix32(shingles[start : start + _BLOCK].astype(np.uint32))
        phv = np.multiply.outer(hv, a)
        phv += b
        np.minimum(out, phv.min(axis=0), out=out)
    return out


def minhash_values_many(shingle_arrays: list[np.ndarray], permutations: np.ndarray) -> list[np.ndarray]:
    """`minhash_values` of several records, with the shingles of up to `_BLOCK` of them hashed in one numpy
    pass (a minimum per record over its rows), so a short record does not pay two dozen numpy calls."""
    a, b = permutations
    out: list[np.ndarray | None] = [None] * len(shingle_arrays)
    group: list[int] = []
    size = 0

    def flush() -> None:
        nonlocal group, size
        if group:
            sizes = [len(shingle_arrays[i]) for i in group]
            hv = _fmix32(np.concatenate([shingle_arrays[i] for i in group]).astype(np.uint32))
            phv = np.multiply.outer(a, hv)  # one row per permutation: reduceat along rows is the fast direction
            phv += b[:, None]
            starts = np.zeros(len(sizes), dtype=np.int64)
            np.cumsum(sizes[:-1], out=starts[1:])
            # Every group member has at least one shingle, so no segment is empty.
            mins = np.ascontiguousarray(np.minimum.reduceat(phv, starts, axis=1).T)
            for row, i in enumerate(group):
                out[i] = mins[row]
        group, size = [], 0

    for i, shingles in enumerate(shingle_arrays):
        if not len(shingles) or len(shingles) > _BLOCK:
            out[i] = minhash_values(shingles, permutations)
            continue
        if size + len(shingles) > _BLOCK:
            flush()
        group.append(i)
        size += len(shingles)
    flush()
    return out  # type: ignore[return-value]


class NearDeduper:
    """MinHash LSH: a record whose estimated Jaccard similarity to a kept one reaches `threshold` is a duplicate.

    Signatures are datasketch affine32 `MinHash` values (computed by `minhash_values`), and the band/row split
    (b bands of r rows) is the one datasketch's `MinHashLSH` picks for the threshold. The band index is ours:
    datasketch's keeps, per band bucket, a set of all keys (about 2.3 KB per record measured here at 128
    permutations, 8 bands), while we only need to know whether some earlier record shares a bucket, so one dict
    maps each band's 64-bit digest to the first record id (about 0.7 KB per record, the id string shared with
    the exact-dedup index).
    """

    def __init__(self, threshold: float, num_perm: int, shingle_words: int, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        params = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.bands, self.rows = params.b, params.r
        self._buckets: dict[int, str] = {}
        template = MinHash(num_perm=num_perm, seed=seed, hashfunc=int, scheme="affine32")
        self._permutations = template.permutations  # (2, num_perm) uint32, validated by datasketch
        self._salts = [i.to_bytes(2, "little") for i in range(self.bands)]

    def band_keys(self, signature: MinHash | np.ndarray) -> list[int]:
        hv = signature.hashvalues if isinstance(signature, MinHash) else signature
        data = hv.tobytes()
        step = self.rows * hv.itemsize
        return [
            int.from_bytes(blake2b(data[i * step : (i + 1) * step], digest_size=8, salt=salt).digest(), "little")
            for i, salt in enumerate(self._salts)
        ]

    def signature(self, messages: list[Message]) -> MinHash:
        return self.signature_of_words(words("\n".join(content for _, content in messages)))

    def signature_of_words(self, tokens: list[str]) -> MinHash:
        return MinHash(num_perm=self.num_perm, hashfunc=int, permutations=self._permutations, scheme="affine32",
                       hashvalues=self.signature_of_hashes(word_hashes(tokens)))

    def signature_of_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The signature's hash values from a record's `word_hashes` (see `words.RecordWords`)."""
        return minhash_values(shingles_of_hashes(hashes, self.shingle_words), self._permutations)

    def signatures_many(self, all_hashes: np.ndarray, offsets: np.ndarray, records: list[int]) -> list[np.ndarray]:
        """`signature_of_hashes` of `records` (indexes into `words.RecordWords.many`'s offsets), shingled in
        one pass over all the word hashes (shingles across a record boundary are dropped)."""
        k = self.shingle_words
        shingles = shingles_of_hashes(all_hashes, k) if len(all_hashes) >= k else np.empty(0, dtype=np.uint64)
        arrays = []
        for r in records:
            start, end = int(offsets[r]), int(offsets[r + 1])
            arrays.append(shingles[start : end - k + 1] if end - start >= k
                          else shingles_of_hashes(all_hashes[start:end], k))
        return minhash_values_many(arrays, self._permutations)

    def first_similar(self, signature: MinHash | np.ndarray) -> str | None:
        """The first kept record sharing a band bucket with `signature` (in band order), or None."""
        for key in self.band_keys(signature):
            earlier = self._buckets.get(key)
            if earlier is not None:
                return earlier
        return None

    def add(self, record_id: str, signature: MinHash | np.ndarray) -> None:
        for key in self.band_keys(signature):
            self._buckets.setdefault(key, record_id)

    def check_and_add(self, record_id: str, signature: MinHash | np.ndarray) -> str | None:
        """`first_similar`, and when there is none, `add` (computing the band keys once)."""
        return self.check_and_add_keys(record_id, self.band_keys(signature))

    def check_and_add_keys(self, record_id: str, keys: list[int]) -> str | None:
        """`check_and_add` with the signature's `band_keys` already computed (by a worker process)."""
        for key in keys:
            earlier = self._buckets.get(key)
            if earlier is not None:
                return earlier
        for key in keys:
            self._buckets[key] = record_id
        return None
