"""Tokenized-data cache: built once in parallel processes, memory-mapped afterwards, keyed by everything it depends on.

The key hashes the dataset manifest (which lists every shard's sha256), the tokenizer (its serialized model, special
tokens and chat template), the template config, the split, seq_length, the over-long policy and the mode, plus a
format version. A changed key builds a new entry; an unchanged one loads by memory-mapping (a stale cache gave axolotl
users a loss of 10 instead of 4, docs/reference.md §4). Entries are built in a temporary directory and renamed into place,
so a crash never leaves an entry that looks complete; concurrent builders (several ranks) are safe, the first rename
wins.

Entry layout `<cache_dir>/<split>-<key>/`: `input_ids.npy` (int32, all kept samples concatenated, task by task),
`loss_mask.npy` (uint8), `offsets.npy` (int64, N+1 sample boundaries), `task_ids.npy` (int32 per sample), `meta.json`
(key parts, tasks, counts per task and outcome, build time).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mft_trainer.config.template import TemplateConfig
from mft_trainer.data.dataset import PreparedDataset
from mft_trainer.data.tokenize import OUTCOMES, Unit, UnitResult, tokenize_unit

CACHE_FORMAT = 1
ROWS_PER_UNIT = 2000
PARALLEL_MIN_RECORDS = 4000


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 over the tokenizer's serialized model, special tokens and chat template (where it was loaded from
    does not matter, what it does does)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError("a fast (tokenizers-backed) tokenizer is required: loss masks need character offsets")
    h = hashlib.sha256()
    h.update(backend.to_str().encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    h.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return h.hexdigest()


def cache_key(
    dataset: PreparedDataset,
    split: str,
    tokenizer: Any,
    template_cfg: TemplateConfig,
    *,
    seq_length: int,
    overlong: str,
    mode: str,
) -> tuple[str, dict[str, Any]]:
    parts = {
        "format": CACHE_FORMAT,
        "manifest": dataset.manifest_hash,
        "task_kinds": dataset.task_kinds,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "template": template_cfg.model_dump(mode="json"),
        "split": split,
        "seq_length": int(seq_length),
        "overlong": overlong,
        "mode": mode,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return key, parts


@dataclass
class TokenizedSplit:
    """A memory-mapped tokenized split. Sample i is input_ids[offsets[i]:offsets[i+1]]; samples sorted by task."""

    path: Path
    key: str
    tasks: list[str]
    input_ids: np.ndarray
    loss_mask: np.ndarray
    offsets: np.ndarray
    task_ids: np.ndarray
    meta: dict[str, Any]
    loaded_from_cache: bool = False
    seconds: float = 0.0
    _lengths: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.task_ids)

    @property
    def lengths(self) -> np.ndarray:
        if self._lengths is None:
            self._lengths = np.diff(self.offsets)
        return self._lengths

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.input_ids[a:b], self.loss_mask[a:b].astype(bool)

    def task_offsets_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.bincount(self.task_ids, minlength=len(self.tasks)).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return offsets, sizes

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Outcome counts per task (see tokenize.py), e.g. counts['code-a']['dropped_overlong']."""
        return self.meta["counts"]

    def totals(self) -> dict[str, int]:
        total: Counter = Counter()
        for per_task in self.counts.values():
            total.update(per_task)
        return {k: int(total.get(k, 0)) for k in OUTCOMES}


def _load(path: Path, loaded_from_cache: bool, seconds: float) -> TokenizedSplit:
    meta = json.loads((path / "meta.json").read_text())
    return TokenizedSplit(
        path=path,
        key=meta["key"],
        tasks=meta["tasks"],
        input_ids=np.load(path / "input_ids.npy", mmap_mode="r"),
        loss_mask=np.load(path / "loss_mask.npy", mmap_mode="r"),
        offsets=np.load(path / "offsets.npy"),
        task_ids=np.load(path / "task_ids.npy"),
        meta=meta,
        loaded_from_cache=loaded_from_cache,
        seconds=seconds,
    )


def _units(dataset: PreparedDataset, split: str) -> list[Unit]:
    from mft_trainer.data.dataset import read_table

    units = []
    for task_id, task in enumerate(dataset.tasks):
        for shard in dataset.shard_paths(split, task):
            rows = read_table(shard).num_rows
            for start in range(0, rows, ROWS_PER_UNIT):
                units.append(
                    Unit(str(shard), start, min(rows, start + ROWS_PER_UNIT), task_id, dataset.task_kinds[task])
                )
    return units


_WORKER: dict[str, Any] = {}


@dataclass
class LightTokenizer:
    """What the MFTCoder template and text records need from a tokenizer, without importing transformers (a worker
    starts in well under a second instead of several)."""

    backend_tokenizer: Any
    eos_token: str | None
    eos_token_id: int | None
    bos_token: str | None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> dict[str, Any]:
        return {
            "backend_json": tokenizer.backend_tokenizer.to_str(),
            "eos_token": tokenizer.eos_token,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token": tokenizer.bos_token,
        }


def _init_worker(tokenizer_spec: dict[str, Any], template_json: str, seq_length: int | None, overlong: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    template = TemplateConfig.model_validate_json(template_json)
    if "dir" in tokenizer_spec:  # the tokenizer's own chat template needs the real HF tokenizer
        from transformers import AutoTokenizer

        _WORKER["tokenizer"] = AutoTokenizer.from_pretrained(tokenizer_spec["dir"])
    else:
        from tokenizers import Tokenizer

        spec = dict(tokenizer_spec)
        _WORKER["tokenizer"] = LightTokenizer(Tokenizer.from_str(spec.pop("backend_json")), **spec)
    _WORKER["template"] = template
    _WORKER["seq_length"] = seq_length
    _WORKER["overlong"] = overlong


def _work(unit: Unit) -> UnitResult:
    return tokenize_unit(unit, _WORKER["tokenizer"], _WORKER["template"], _WORKER["seq_length"], _WORKER["overlong"])


def load_or_build(
    dataset: PreparedDataset,
    split: str,
    tokenizer: Any,
    template_cfg: TemplateConfig,
    *,
    seq_length: int,
    overlong: str = "drop",
    mode: str = "sft",
    cache_dir: Path,
    num_workers: int = 2,
    progress: bool = False,
) -> TokenizedSplit:
    """Load the entry for this key, or build it (in `num_workers` processes when the split is large)."""
    t0 = time.perf_counter()
    key, parts = cache_key(
        dataset, split, tokenizer, template_cfg, seq_length=seq_length, overlong=overlong, mode=mode
    )
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{split}-{key}"
    if (final / "meta.json").is_file():
        return _load(final, True, time.perf_counter() - t0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        units = _units(dataset, split)
        fit_length = None if mode == "pretrain" else seq_length
        total_rows = sum(u.stop - u.start for u in units)
        results: list[UnitResult]
        if num_workers > 0 and total_rows >= PARALLEL_MIN_RECORDS and len(units) > 1:
            if template_cfg.kind == "tokenizer":
                tokenizer.save_pretrained(str(tmp / "tokenizer"))
                spec: dict[str, Any] = {"dir": str(tmp / "tokenizer")}
            else:
                spec = LightTokenizer.from_tokenizer(tokenizer)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=min(num_workers, len(units)),
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(spec, template_cfg.model_dump_json(), fit_length, overlong),
            ) as pool:
                results = list(_progress(pool.map(_work, units), len(units), progress))
        else:
            results = [
                tokenize_unit(u, tokenizer, template_cfg, fit_length, overlong)
                for u in _progress(units, len(units), progress)
            ]
        _write_entry(tmp, key, parts, dataset.tasks, units, results, time.perf_counter() - t0)
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load(final, False, time.perf_counter() - t0)


def _progress(it, total: int, enabled: bool):
    if not enabled:
        yield from it
        return
    from rich.progress import track

    yield from track(it, total=total, description="tokenizing")


def _write_entry(
    tmp: Path,
    key: str,
    parts: dict[str, Any],
    tasks: list[str],
    units: list[Unit],
    results: list[UnitResult],
    seconds: float,
) -> None:
    n_tokens = sum(len(r.input_ids) for r in results)
    n_samples = sum(len(r.lengths) for r in results)
    ids = np.lib.format.open_memmap(tmp / "input_ids.npy", mode="w+", dtype=np.int32, shape=(n_tokens,))
    mask = np.lib.format.open_memmap(tmp / "loss_mask.npy", mode="w+", dtype=np.uint8, shape=(n_tokens,))
    lengths = np.zeros(n_samples, dtype=np.int64)
    task_ids = np.zeros(n_samples, dtype=np.int32)
    counts: dict[str, Counter] = {t: Counter() for t in tasks}
    reasons: list[str] = []
    straddles = 0
    pos = sample = 0
    for unit, res in zip(units, results, strict=True):
        n = len(res.input_ids)
        ids[pos : pos + n] = res.input_ids
        mask[pos : pos + n] = res.loss_mask
        k = len(res.lengths)
        lengths[sample : sample + k] = res.lengths
        task_ids[sample : sample + k] = unit.task_id
        pos += n
        sample += k
        counts[tasks[unit.task_id]].update(res.counts)
        straddles += res.boundary_straddles
        reasons.extend(res.reasons[: max(0, 50 - len(reasons))])
    ids.flush()
    mask.flush()
    del ids, mask
    np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    np.save(tmp / "task_ids.npy", task_ids)
    meta = {
        "key": key,
        "key_parts": parts,
        "tasks": tasks,
        "num_samples": int(n_samples),
        "num_tokens": int(n_tokens),
        "supervised_tokens": int(sum(int(r.loss_mask.sum()) for r in results)),
        "counts": {t: {k: int(c.get(k, 0)) for k in OUTCOMES} for t, c in counts.items()},
        "boundary_straddles": int(straddles),
        "invalid_reasons": reasons,
        "build_seconds": round(seconds, 3),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
