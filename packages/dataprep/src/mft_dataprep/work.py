"""The pure per-record work of a prep run, and a process pool that does it for chunks of records in input order.

`analyse` is everything about one validated conversation that depends on that record alone: the Evol quality
rules, the content hash and exact-dedup key, the decontamination verdict and the near-dedup band keys. The
decisions that depend on earlier records (exact and near dedup, ids, split, spool) stay in the main process
(`prep._Run`), which applies the results strictly in input order, so the outputs are byte-identical whether
`analyse` ran inline or in a worker process. Workers are forked (they inherit the loaded benchmarks and MinHash
permutations), at most `max_ahead` chunks are in flight so memory stays bounded, and only the conversation goes
to a worker and a few hashes come back. A process pool because the work is pure Python and numpy on small
arrays, which holds the GIL: threads would not run it in parallel.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from .config import QualityConfig
from .decontam import Decontaminator
from .dedup import NearDeduper, exact_key
from .filters.evol import check_quality
from .records import Message, Rejected
from .words import RecordWords

CHUNK_RECORDS = 512
CHUNK_CHARS = 8 << 20  # also close a chunk on size, so a few huge text records do not pile up
MIN_PARALLEL_BYTES = 16 << 20  # below this much input a pool costs more than it saves


@dataclass(frozen=True, slots=True)
class Job:
    """What `analyse` needs to know about the record beyond its messages."""

    quality: QualityConfig | None
    exact: bool
    decontaminate: bool
    near: bool


@dataclass(slots=True)
class Analysis:
    rejected: tuple[str, str] | None  # (reason, detail) of the quality rule the record breaks
    content_hash: str = ""
    exact_key: bytes | None = None
    contaminated: tuple[str, str] | None = None  # (benchmark, detail)
    band_keys: list[int] | None = None  # near-dedup band keys; None when contaminated or near dedup is off


def content_hash(messages: list[Message]) -> str:
    """sha256 over each turn's role, length and UTF-8 content: unambiguous, and cheaper than JSON-encoding."""
    h = hashlib.sha256()
    for role, content in messages:
        data = content.encode("utf-8")
        h.update(f"{role}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


def analyse(chunk: list[tuple[list[Message], Job]], decontam: Decontaminator | None,
            near: NearDeduper | None) -> list[Analysis]:
    """The `Analysis` of every record of a chunk. The word hashes, n-gram search and MinHash signatures of the
    chunk are each computed in one numpy pass over all its records (see `RecordWords.many`)."""
    results: list[Analysis] = []
    texts: list[list[bytes]] = []
    owners: list[int] = []  # texts[j] is the words of results[owners[j]]
    for messages, job in chunk:
        splits = None
        if job.quality is not None:
            splits = [content.split() for _, content in messages]  # shared with exact_key below
            try:
                check_quality(messages, job.quality, splits)
            except Rejected as rej:
                results.append(Analysis((rej.reason, rej.detail)))
                continue
        if (job.decontaminate and decontam is not None) or (job.near and near is not None):
            owners.append(len(results))
            texts.append(RecordWords.split_text("\n".join(content for _, content in messages)))
        results.append(Analysis(None, content_hash(messages), exact_key(messages, splits) if job.exact else None))
    if not owners:
        return results
    rws, all_hashes, offsets = RecordWords.many(texts)
    jobs = [chunk[i][1] for i in owners]
    if decontam is not None and any(job.decontaminate for job in jobs):
        for i, job, verdict in zip(owners, jobs, decontam.check_many(rws, all_hashes, offsets), strict=True):
            if job.decontaminate:
                results[i].contaminated = verdict
    if near is not None:
        wanted = [j for j, (i, job) in enumerate(zip(owners, jobs, strict=True))
                  if job.near and results[i].contaminated is None]
        for j, signature in zip(wanted, near.signatures_many(all_hashes, offsets, wanted), strict=True):
            results[owners[j]].band_keys = near.band_keys(signature)
    return results


_STATE: tuple[Decontaminator | None, NearDeduper | None] = (None, None)


def _init_worker(decontam: Decontaminator | None, near: NearDeduper | None) -> None:
    global _STATE
    _STATE = (decontam, near)


def _analyse_chunk(chunk: list[tuple[list[Message], Job]]) -> list[Analysis]:
    decontam, near = _STATE
    return analyse(chunk, decontam, near)


def default_workers() -> int:
    """Worker processes to use: one per CPU this process may run on (at most 8), or 0 (work inline) on one CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, 8) if cpus > 1 else 0


class Analyser:
    """Runs `analyse` for chunks of records, inline (`workers` 0) or in a pool, and hands back each chunk's
    results, with the caller's context, in submission order through `on_done`."""

    def __init__(self, workers: int, decontam: Decontaminator | None, near: NearDeduper | None,
                 on_done: Callable[[Any, list[Analysis]], None]) -> None:
        self.decontam = decontam
        self.near = near
        self.on_done = on_done
        self.pool: ProcessPoolExecutor | None = None
        if workers > 0 and "fork" in multiprocessing.get_all_start_methods():
            # An executor rather than multiprocessing.Pool: a worker that dies (killed for memory) breaks the run
            # with BrokenProcessPool instead of leaving it waiting forever for the lost chunk.
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_init_worker, initargs=(decontam, near))
        self.max_ahead = 2 * workers
        self._pending: deque[tuple[Any, Future]] = deque()

    def submit(self, context: Any, chunk: list[tuple[list[Message], Job]]) -> None:
        if self.pool is None:
            self.on_done(context, analyse(chunk, self.decontam, self.near))
            return
        self._pending.append((context, self.pool.submit(_analyse_chunk, chunk)))
        while len(self._pending) > self.max_ahead:
            self._finish_one()

    def drain(self) -> None:
        while self._pending:
            self._finish_one()

    def _finish_one(self) -> None:
        context, future = self._pending.popleft()
        self.on_done(context, future.result())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self._pending.clear()
