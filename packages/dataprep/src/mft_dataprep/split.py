"""Deterministic train/valid split from each record's id, independent of input order.

Each record gets a 64-bit key, a hash of (seed, id). With `valid_fraction` a record is valid when its key falls
below fraction * 2^64: the decision depends on the record alone, so it survives reruns, reordering and added data.
With `valid_count` the records with the `valid_count` smallest keys are valid, which needs one pass over the
task's keys (kept as a bounded heap) before shards are written.
"""

from __future__ import annotations

import hashlib
import heapq

KEY_SPACE = 1 << 64


def split_key(record_id: str, seed: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{record_id}".encode(), digest_size=8).digest(), "big")


def fraction_threshold(fraction: float) -> int:
    """Keys strictly below this are valid."""
    return min(int(fraction * KEY_SPACE), KEY_SPACE)


class SmallestKeys:
    """The k smallest keys seen so far, in O(k) memory (a max-heap of negated keys)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[int] = []

    def add(self, key: int) -> None:
        if self.k <= 0:
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, -key)
        elif key < -self._heap[0]:
            heapq.heapreplace(self._heap, -key)

    def threshold(self) -> int:
        """Keys strictly below this are among the k smallest (0 when k is 0 or nothing was seen)."""
        return (-self._heap[0] + 1) if self._heap else 0
