"""Read completion files in the three accepted formats and turn each line into a program to execute.

- ours (``samples.jsonl`` of ``mft-eval run``): ``task_id``, ``sample_index``, ``program`` (run as is);
- human-eval: ``{"task_id", "completion"}``, the completion appended to the prompt;
- codefuse-evaluation: ``{"task_id": "Python/N", "generation"}``, the generation appended to the prompt.

Task ids are matched exactly, else by their number (``Python/3`` → ``HumanEval/3``, ``Python/11`` → ``MBPP/11``).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mft_eval.extract import program_from_completion
from mft_eval.problems import Benchmark, json_error


class SampleFileError(ValueError):
    """A samples file line that cannot be scored (names the file, line and key)."""


@dataclass(frozen=True)
class Sample:
    task_id: str
    sample_index: int
    program: str
    completion: str
    source_format: str


def _id_resolver(bench: Benchmark):
    exact = {p.task_id for p in bench.problems}
    by_number: dict[str, str] = {}
    for task_id in exact:
        by_number.setdefault(task_id.rsplit("/", 1)[-1], task_id)

    def resolve(raw: object) -> str | None:
        text = str(raw)
        if text in exact:
            return text
        return by_number.get(text.rsplit("/", 1)[-1])

    return resolve


@dataclass
class SamplesRead:
    """What a samples file held: the samples, and the lines that could not be read (`file:line: reason`)."""

    samples: list[Sample]
    unreadable: list[str]


def read_samples(path: Path, bench: Benchmark) -> list[Sample]:
    """Every sample of the file; the first line that cannot be read raises `SampleFileError`."""
    return read_samples_skipping(path, bench, strict=True).samples


def read_samples_skipping(path: Path, bench: Benchmark, strict: bool = False) -> SamplesRead:
    """Every readable sample of the file, and each unreadable line reported as `file:line: reason` and skipped
    (with `strict`, the first one raises `SampleFileError`). A file with no readable sample raises."""
    path = Path(path)
    problems = bench.by_id()
    resolve = _id_resolver(bench)
    counter: Counter[str] = Counter()
    samples: list[Sample] = []
    unreadable: list[str] = []
    for lineno, rec in _lines(path, unreadable, strict):
        try:
            task_id, fmt, completion, program = _parse(path, lineno, rec, resolve, problems, bench)
        except SampleFileError as exc:
            if strict:
                raise
            unreadable.append(str(exc))
            continue
        index = rec.get("sample_index", rec.get("completion_id"))
        if not isinstance(index, int):
            index = counter[task_id]
        counter[task_id] += 1
        samples.append(Sample(task_id, index, program, completion, fmt))
    if not samples:
        first = f"; first unreadable line: {unreadable[0]}" if unreadable else ""
        raise SampleFileError(f"{path}: no samples{first}")
    return SamplesRead(samples, unreadable)


def _lines(path: Path, unreadable: list[str], strict: bool):
    """(line number, object) for each line that is a JSON object; the others go to `unreadable`."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise SampleFileError(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start})") from None
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise SampleFileError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            except json.JSONDecodeError as exc:
                error = SampleFileError(f"{path}:{lineno}: {json_error(exc)}")
                if strict:
                    raise error from exc
                unreadable.append(str(error))
                continue
            except SampleFileError as exc:
                if strict:
                    raise
                unreadable.append(str(exc))
                continue
            yield lineno, record


def _parse(path: Path, lineno: int, rec: dict, resolve, problems: dict, bench: Benchmark):
    if "task_id" not in rec:
        raise SampleFileError(f"{path}:{lineno}: expected an object with a 'task_id'")
    task_id = resolve(rec["task_id"])
    if task_id is None:
        raise SampleFileError(f"{path}:{lineno}: task_id {rec['task_id']!r} is not a problem of {bench.name}")
    problem = problems[task_id]
    if isinstance(rec.get("program"), str):
        return task_id, "mft-eval", str(rec.get("completion", "")), rec["program"]
    if isinstance(rec.get("generation"), str):
        return task_id, "codefuse", rec["generation"], program_from_completion(rec["generation"], problem)
    if isinstance(rec.get("completion"), str):
        return task_id, "human-eval", rec["completion"], program_from_completion(rec["completion"], problem)
    raise SampleFileError(
        f"{path}:{lineno}: no 'program', 'completion' or 'generation' string "
        "(accepted: mft-eval samples.jsonl, human-eval, codefuse-evaluation)"
    )
