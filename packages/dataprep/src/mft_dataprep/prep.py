"""The prep run: stream every source, validate, filter, dedup, decontaminate, split and write Contract 1 shards.

Pass 1 streams each task's sources in config order and spools kept records (with their split key) to a
temporary Arrow stream; pass 2 routes each task's spool into train/valid shards. Everything is written under
temporary names; rejects.jsonl is renamed into place when complete and manifest.json is written last, so an
interrupted run leaves no manifest and the next run starts clean.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import __version__
from .config import PrepConfig, TaskConfig
from .containers import container_of, read_items, read_text_file
from .decontam import BenchmarkNgramIndex, Decontaminator, humaneval_path, load_humaneval, load_mbpp
from .dedup import ExactDeduper, NearDeduper
from .formats import PAIR_FORMATS, convert, detect_format
from .manifest import MANIFEST, REJECTS, SCHEMA_VERSION, is_complete, write_manifest
from .progress import PrepProgress
from .records import Message, RawItem, Rejected, location
from .shards import SCHEMA, ShardWriter, SpoolWriter, read_spool, sha256_file
from .split import SmallestKeys, fraction_threshold, split_key
from .validate import normalise_chat, normalise_text
from .work import (
    CHUNK_CHARS,
    CHUNK_RECORDS,
    MIN_PARALLEL_BYTES,
    Analyser,
    Analysis,
    Job,
    default_workers,
)

SPOOL_DIR = ".spool"
CATEGORIES = ("rejected", "duplicate", "contaminated")


@dataclass
class TaskCounts:
    kind: str
    read: int = 0
    kept: int = 0
    rejected: int = 0
    duplicate: int = 0
    contaminated: int = 0
    reasons: Counter = field(default_factory=Counter)  # "category:reason" -> count
    contaminated_by: Counter = field(default_factory=Counter)  # benchmark -> count


class EmptyTaskError(ValueError):
    """Every record of a task was rejected, a duplicate or contaminated: training would silently lack the task."""


@dataclass
class PrepResult:
    output: Path
    skipped: bool
    manifest: dict[str, Any]
    seconds: float


def resolve_output(config: PrepConfig, output: Path | str | None) -> Path:
    if output is not None:
        return Path(output).expanduser().resolve()
    if config.output is None:
        raise ValueError("no output directory: set `output` in the config or pass --output")
    return config.resolve(config.output).resolve()


def _clean_output(output: Path) -> None:
    """Remove what an earlier (possibly interrupted) run of ours left; never touch other files."""
    (output / MANIFEST).unlink(missing_ok=True)  # first: a half-rewritten directory must not look complete
    for name in ("train", "valid", SPOOL_DIR):
        if (output / name).exists():
            shutil.rmtree(output / name)
    for name in (REJECTS, REJECTS + ".tmp", MANIFEST + ".tmp"):
        (output / name).unlink(missing_ok=True)


def _load_benchmarks(config: PrepConfig) -> list[BenchmarkNgramIndex]:
    dc = config.decontamination
    if not any(t.decontaminate for t in config.tasks):
        return []
    benches = []
    if dc.humaneval:
        benches.append(load_humaneval(dc.ngram))
    if dc.mbpp_path is not None:
        benches.append(load_mbpp(config.resolve(dc.mbpp_path), dc.ngram))
    return benches


class _Run:
    """State of one prep run (dedup indexes, counters, open writers)."""

    def __init__(self, config: PrepConfig, output: Path, progress: PrepProgress, workers: int = 0) -> None:
        self.config = config
        self.output = output
        self.progress = progress
        self.exact = ExactDeduper() if config.dedup.exact else None
        d = config.dedup
        self.near = NearDeduper(d.threshold, d.num_perm, d.shingle_words) if d.near else None
        benches = _load_benchmarks(config)
        dc = config.decontamination
        self.decontam = Decontaminator(benches, dc.ngram, dc.docstring_fraction, dc.min_docstring_words) if benches else None
        self.counts: dict[str, TaskCounts] = {t.name: TaskCounts(t.kind) for t in config.tasks}
        self.sources: list[dict[str, Any]] = []
        self.containers: dict[str, str] = {}  # source label -> container, for `location`
        self.first_reject: dict[str, str] = {}  # task -> where and why its first record was not kept
        self.ids_seen: Counter = Counter()  # only used when exact dedup is off (ids must stay unique)
        self._spools: dict[str, tuple[SpoolWriter, SmallestKeys | None]] = {}  # pass 1 -> pass 2, per task
        # Forked before any output file is open; the workers inherit the benchmarks and permutations loaded above.
        self.analyser = Analyser(workers, self.decontam, self.near, self._decide_chunk)
        self._chunk: list[tuple[RawItem, str, list[Message] | None, Rejected | None]] = []
        self._jobs: list[tuple[list[Message], Job]] = []
        self._chunk_chars = 0
        self._job_cache: dict[Job, Job] = {}
        self.rejects = open(output / (REJECTS + ".tmp"), "w", encoding="utf-8")  # noqa: SIM115

    # -- pass 1 ---------------------------------------------------------------------------------------------
    def reject(self, counts: TaskCounts, task: str, source: str, item_index: int, raw: str, category: str,
               reason: str, detail: str) -> None:
        setattr(counts, category, getattr(counts, category) + 1)
        counts.reasons[f"{category}:{reason}"] += 1
        where = location(source, item_index, self.containers[source])
        self.first_reject.setdefault(task, f"{where}: {category} {reason}" + (f" ({detail})" if detail else ""))
        entry = {"task": task, "source": source, "index": item_index, "where": where, "category": category,
                 "reason": reason, "detail": detail, "raw": raw}
        self.rejects.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def run_task(self, task: TaskConfig) -> None:
        counts = self.counts[task.name]
        split = self.config.split_for(task)
        spool = SpoolWriter(self.output / SPOOL_DIR / f"{task.name}.arrows")
        smallest = SmallestKeys(split.valid_count) if split.valid_count is not None else None
        quality = self.config.quality_for(task)
        max_chars = self.config.max_chars_for(task)
        for path in self.config.task_sources(task):
            label = self.config.source_label(path)
            if task.kind == "text":
                fmt, items = "text", iter([read_text_file(path)])
            else:
                fmt, items = task.format, read_items(path)
            source = {"task": task.name, "path": label, "bytes": path.stat().st_size, "sha256": sha256_file(path),
                      "container": "text" if task.kind == "text" else container_of(path), "format": fmt, "read": 0}
            self.containers[label] = source["container"]
            self.progress.start_source(task.name, label)
            n_read = 0
            for item in items:
                n_read += 1
                if fmt == "auto" and item.error is None:
                    detected = detect_format(item.obj)
                    if detected is not None:
                        fmt = detected
                use_quality = quality.enabled is True or (quality.enabled == "auto" and fmt in PAIR_FORMATS)
                self._prepare(task, counts, spool, smallest, label, fmt, item, max_chars,
                              quality if use_quality else None)
                if n_read % 512 == 0:
                    self.progress.advance(512)
            self._submit_chunk(task, counts, spool, smallest)
            self.analyser.drain()  # every record of this source decided before the next source starts
            self.progress.advance(n_read % 512)
            source["format"] = fmt if fmt != "auto" else "unknown"
            source["read"] = n_read
            counts.read += n_read
            self.sources.append(source)
        spool.close()
        self._spools[task.name] = (spool, smallest)

    def _prepare(self, task: TaskConfig, counts: TaskCounts, spool: SpoolWriter, smallest: SmallestKeys | None,
                 label: str, fmt: str, item: RawItem, max_chars: int, quality) -> None:
        """Validate one record (structure and format, which need nothing but the record) and queue it for
        `analyse`; the decisions are taken in `_decide`, in input order."""
        messages = None
        try:
            if item.error is not None:
                raise item.error
            if task.kind == "text":
                messages = normalise_text(item.obj, max_chars, item.check_surrogates)
                quality = None  # the Evol rules are for conversations
            else:
                if fmt == "auto":
                    if not isinstance(item.obj, dict):
                        raise Rejected("not_an_object", f"expected a JSON object, got {type(item.obj).__name__}")
                    raise Rejected("unknown_format", f"keys {sorted(item.obj)[:8]} match no supported format")
                messages = normalise_chat(convert(fmt, item.obj), max_chars, item.check_surrogates)
        except Rejected as rej:
            self._chunk.append((item, label, None, rej))
        else:
            self._chunk.append((item, label, messages, None))
            job = Job(quality, self.exact is not None, self.decontam is not None and task.decontaminate,
                      self.near is not None)
            # One shared Job per setting, so a chunk sent to a worker pickles each setting once.
            self._jobs.append((messages, self._job_cache.setdefault(job, job)))
            self._chunk_chars += sum(len(content) for _, content in messages)
        if len(self._chunk) >= CHUNK_RECORDS or self._chunk_chars >= CHUNK_CHARS:
            self._submit_chunk(task, counts, spool, smallest)

    def _submit_chunk(self, task: TaskConfig, counts: TaskCounts, spool: SpoolWriter,
                      smallest: SmallestKeys | None) -> None:
        if self._chunk:
            self.analyser.submit((task, counts, spool, smallest, self._chunk), self._jobs)
        self._chunk, self._jobs, self._chunk_chars = [], [], 0

    def _decide_chunk(self, context: tuple, results: list[Analysis]) -> None:
        task, counts, spool, smallest, chunk = context
        analyses = iter(results)
        for item, label, messages, rejected in chunk:
            if rejected is not None:
                self.reject(counts, task.name, label, item.index, item.raw, "rejected", rejected.reason,
                            rejected.detail)
            else:
                self._decide(task, counts, spool, smallest, label, item, messages, next(analyses))

    def _decide(self, task: TaskConfig, counts: TaskCounts, spool: SpoolWriter, smallest: SmallestKeys | None,
                label: str, item: RawItem, messages: list[Message], analysis: Analysis) -> None:
        if analysis.rejected is not None:
            self.reject(counts, task.name, label, item.index, item.raw, "rejected", *analysis.rejected)
            return
        chash = analysis.content_hash
        record_id = f"{task.name}-{chash[:16]}"
        if self.exact is not None:
            earlier = self.exact.first_seen(analysis.exact_key, record_id)
            if earlier is not None:
                self.reject(counts, task.name, label, item.index, item.raw, "duplicate", "exact_duplicate",
                            f"same normalised content as {earlier}")
                return
        else:
            self.ids_seen[record_id] += 1
            if self.ids_seen[record_id] > 1:
                record_id = f"{record_id}-{self.ids_seen[record_id]}"
        if analysis.contaminated is not None:
            bench, detail = analysis.contaminated
            counts.contaminated_by[bench] += 1
            self.reject(counts, task.name, label, item.index, item.raw, "contaminated", bench, detail)
            return
        if self.near is not None:
            similar = self.near.check_and_add_keys(record_id, analysis.band_keys)
            if similar is not None:
                self.reject(counts, task.name, label, item.index, item.raw, "duplicate", "near_duplicate",
                            f"MinHash LSH candidate (threshold {self.config.dedup.threshold}) of {similar}")
                return
        key = split_key(record_id, self.config.split_for(task).seed)
        if smallest is not None:
            smallest.add(key)
        counts.kept += 1
        spool.add({"id": record_id, "task": task.name,
                   "messages": [{"role": r, "content": c} for r, c in messages],
                   "source": label, "source_index": item.index, "content_hash": chash, "split_key": key})

    # -- pass 2 ---------------------------------------------------------------------------------------------
    def write_shards(self, task: TaskConfig) -> dict[str, Any]:
        spool, smallest = self._spools[task.name]
        split = self.config.split_for(task)
        counts = self.counts[task.name]
        note = None
        if smallest is not None:
            threshold = smallest.threshold()
            if counts.kept <= (split.valid_count or 0):
                threshold, note = 0, (f"too small for a validation split: {counts.kept} records, "
                                      f"valid_count {split.valid_count} would leave no training data")
        else:
            threshold = fraction_threshold(split.valid_fraction)
        writers = {name: ShardWriter(self.output, name, task.name, self.config.rows_per_shard,
                                     self.config.compression) for name in ("train", "valid")}
        threshold_scalar = pa.scalar(min(threshold, (1 << 64) - 1), pa.uint64())
        for batch in read_spool(spool.path):
            keys = batch.column("split_key")
            valid_mask = pc.less(keys, threshold_scalar) if threshold < (1 << 64) else pc.is_valid(keys)
            rows = pa.RecordBatch.from_arrays(batch.columns[: len(SCHEMA)], schema=SCHEMA)
            writers["valid"].write(rows.filter(valid_mask))
            writers["train"].write(rows.filter(pc.invert(valid_mask)))
        spool.path.unlink()
        result: dict[str, Any] = {}
        for name, writer in writers.items():
            shards = writer.close()
            result[name] = {"records": sum(s.rows for s in shards), "shards": [s.__dict__ for s in shards]}
        if note is None and result["valid"]["records"] == 0 and (split.valid_count or split.valid_fraction):
            how = (f"valid_count {split.valid_count}" if split.valid_count is not None
                   else f"valid_fraction {split.valid_fraction}")
            note = f"too small for a validation split: {counts.kept} records, none selected at {how}"
        result["note"] = note
        return result


def run_prep(config: PrepConfig, output: Path | str | None = None, progress: bool = True,
             workers: int | None = None, allow_empty: bool = False) -> PrepResult:
    """Prepare the dataset `config` describes into `output` (default: the config's `output`); see module doc.

    `workers`: processes for the per-record work (`work.analyse`); None picks one per CPU when the input is
    large enough to pay for them, 0 works inline. The outputs are byte-identical for every value.
    A task that keeps no record raises `EmptyTaskError` (after rejects.jsonl is written, so the reasons can be
    read) unless `allow_empty` or the task's `allow_empty` key is set.
    """
    start = time.perf_counter()
    config.check_sources()  # also for configs built without from_yaml/from_dict: fail before any work
    out = resolve_output(config, output)
    if is_complete(out, config):
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return PrepResult(out, True, manifest, time.perf_counter() - start)
    out.mkdir(parents=True, exist_ok=True)
    _clean_output(out)
    (out / SPOOL_DIR).mkdir()
    total_files = sum(len(config.task_sources(t)) for t in config.tasks)
    if workers is None:
        big = sum(p.stat().st_size for t in config.tasks for p in config.task_sources(t)) >= MIN_PARALLEL_BYTES
        workers = default_workers() if big else 0
    with PrepProgress(enabled=progress, total_sources=total_files) as bar:
        state = _Run(config, out, bar, workers)
        try:
            for task in config.tasks:
                state.run_task(task)
        finally:
            state.analyser.close()
            state.rejects.close()
        _check_not_empty(config, state, out, allow_empty)
        bar.writing()
        splits = {task.name: state.write_shards(task) for task in config.tasks}
    (out / SPOOL_DIR).rmdir()
    (out / (REJECTS + ".tmp")).replace(out / REJECTS)
    manifest = build_manifest(config, state, splits)
    write_manifest(out, manifest)
    return PrepResult(out, False, manifest, time.perf_counter() - start)


def _check_not_empty(config: PrepConfig, state: _Run, out: Path, allow_empty: bool) -> None:
    empty = [t for t in config.tasks if state.counts[t.name].kept == 0 and not (allow_empty or t.allow_empty)]
    if not empty:
        return
    shutil.rmtree(out / SPOOL_DIR)
    (out / (REJECTS + ".tmp")).replace(out / REJECTS)
    parts = []
    for task in empty:
        c = state.counts[task.name]
        first = state.first_reject.get(task.name)
        parts.append(f"task {task.name!r} kept 0 of {c.read} records" + (f", first: {first}" if first else ""))
    raise EmptyTaskError(
        f"{'; '.join(parts)}; every reason is in {out / REJECTS} (set `allow_empty: true` on the task or pass "
        "--allow-empty to write the dataset anyway)"
    )


def benchmark_files(config: PrepConfig) -> list[dict[str, str]]:
    """The decontamination data this run used, by sha256 (so a changed benchmark file invalidates the output)."""
    if not any(t.decontaminate for t in config.tasks):
        return []
    files = []
    if config.decontamination.humaneval:
        files.append(("humaneval", humaneval_path()))
    if config.decontamination.mbpp_path is not None:
        files.append(("mbpp", config.resolve(config.decontamination.mbpp_path)))
    return [{"name": name, "path": path.name, "sha256": sha256_file(path)} for name, path in files]


def build_manifest(config: PrepConfig, state: _Run, splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    shards: list[dict[str, Any]] = []
    totals = dict.fromkeys(("read", "kept", "rejected", "duplicate", "contaminated"), 0)
    for task in config.tasks:
        c = state.counts[task.name]
        s = splits[task.name]
        for name in ("read", "kept", "rejected", "duplicate", "contaminated"):
            totals[name] += getattr(c, name)
        tasks[task.name] = {
            "kind": c.kind,
            "read": c.read,
            "kept": c.kept,
            "rejected": c.rejected,
            "duplicate": c.duplicate,
            "contaminated": c.contaminated,
            "contaminated_by": dict(sorted(c.contaminated_by.items())),
            "reasons": dict(sorted(c.reasons.items())),
            "splits": {name: {"records": s[name]["records"], "shards": [sh["path"] for sh in s[name]["shards"]]}
                       for name in ("train", "valid")},
            "valid_note": s["note"],
        }
        for name in ("train", "valid"):
            shards.extend({"task": task.name, "split": name, **sh} for sh in s[name]["shards"])
    assert totals["read"] == totals["kept"] + totals["rejected"] + totals["duplicate"] + totals["contaminated"], totals
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "mft-prep", "version": __version__},
        "config_hash": config.config_hash(),
        "config": json.loads(config.canonical_json()),
        "shard_format": "arrow-ipc-stream",
        "schema": [{"name": f.name, "type": str(f.type)} for f in SCHEMA],
        "totals": totals,
        "tasks": tasks,
        "sources": state.sources,
        "benchmarks": benchmark_files(config),
        "shards": shards,
        "rejects": REJECTS,
    }
