"""HumanEval-X problems as codefuse-evaluation ships them (``humaneval_{cpp,java,js,go,rust}.jsonl``).

``humaneval-x:LANG`` reads ``$MFT_SHARED_DATA/codefuse-eval/humaneval_LANG.jsonl`` (the same place ``mbpp`` is
looked up); any other file in that layout is read with ``--benchmark PATH --language LANG``. Each record has
task_id (``CPP/0``, ``Java/0``, ``JavaScript/0``, ``Go/0``, ``Rust/0``), prompt, declaration, canonical_solution
and test; Go records also carry ``import`` (the prompt's import block) and ``test_setup`` (package clause and the
test's imports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mft_eval.humaneval_x.languages import LANGUAGE_KEYS, PREFIX_TO_KEY, language
from mft_eval.problems import Benchmark, ProblemFileError, _need, _read_jsonl, file_sha256, shared_data_dir

BENCHMARK_PREFIX = "humaneval-x:"
_NAME_PATTERNS = {
    "cpp": re.compile(r"([A-Za-z_]\w*)\s*\([^()]*(?:\([^()]*\)[^()]*)*\)\s*\{?\s*$"),
    "java": re.compile(r"([A-Za-z_]\w*)\s*\([^()]*\)\s*(?:throws [\w., ]+)?\{?\s*$"),
    "js": re.compile(r"(?:const|let|var|function)\s+([A-Za-z_$][\w$]*)"),
    "go": re.compile(r"func\s+([A-Za-z_]\w*)\s*\("),
    "rust": re.compile(r"fn\s+([A-Za-z_]\w*)\s*(?:<[^>]*>)?\s*\("),
}


@dataclass(frozen=True)
class XProblem:
    """One HumanEval-X problem. ``prompt_is_code`` and ``entry_point`` let the shared code treat it like a
    HumanEval problem (the completion continues the prompt; the entry point names the function)."""

    task_id: str
    language: str
    prompt: str
    declaration: str
    canonical_solution: str
    test: str
    entry_point: str
    go_import: str = ""
    go_test_setup: str = ""
    prompt_is_code: bool = True


def is_humaneval_x(spec: str) -> bool:
    return spec.startswith(BENCHMARK_PREFIX)


def default_path(lang: str) -> Path:
    return shared_data_dir() / "codefuse-eval" / f"humaneval_{lang}.jsonl"


def entry_name(lang: str, declaration: str, test: str = "") -> str:
    """The function the tests call: the last signature of the declaration whose name the test calls (else the
    last signature)."""
    lines = [ln for ln in declaration.strip().splitlines() if ln.strip()]
    pattern = _NAME_PATTERNS[lang]
    names = [m.group(1) for m in (pattern.search(line.strip()) for line in lines) if m]
    called = [n for n in names if re.search(rf"\b{re.escape(n)}\s*\(", test)]
    return (called or names or [""])[-1]


def load_humaneval_x_file(path: Path, lang: str | None = None, name: str | None = None) -> Benchmark:
    """A HumanEval-X JSONL; ``lang`` defaults to the language of the first task id's prefix."""
    path = Path(path)
    rows = _read_jsonl(path)
    if lang is None:
        first = str(rows[0][1].get("task_id", ""))
        lang = PREFIX_TO_KEY.get(first.split("/")[0].lower())
        if lang is None:
            raise ProblemFileError(f"{path}:{rows[0][0]}: cannot tell the language from task_id {first!r}; "
                                   f"pass --language ({', '.join(LANGUAGE_KEYS)})")
    spec = language(lang)
    problems, seen = [], set()
    for lineno, rec in rows:
        task_id = str(_need(path, lineno, rec, "task_id", (str, int)))
        if task_id in seen:
            raise ProblemFileError(f"{path}:{lineno}: duplicate task_id {task_id!r}")
        seen.add(task_id)
        declaration = _need(path, lineno, rec, "declaration")
        go_import = str(rec.get("import") or "")
        go_test_setup = str(rec.get("test_setup") or "")
        if lang == "go" and "package " not in go_test_setup:
            raise ProblemFileError(f"{path}:{lineno}: key 'test_setup' must hold the Go package clause and imports")
        problems.append(XProblem(
            task_id=task_id, language=lang, prompt=_need(path, lineno, rec, "prompt"), declaration=declaration,
            canonical_solution=str(rec.get("canonical_solution") or ""), test=_need(path, lineno, rec, "test"),
            entry_point=entry_name(lang, declaration + "\n" + str(rec.get("prompt", "")), str(rec.get("test", ""))), go_import=go_import, go_test_setup=go_test_setup))
    return Benchmark(name or f"{BENCHMARK_PREFIX}{spec.key}", str(path), file_sha256(path), problems)  # type: ignore[arg-type]


def load_humaneval_x(spec: str, lang: str | None = None) -> Benchmark:
    """``humaneval-x:LANG`` (the shared copy) or a path with an optional language."""
    if is_humaneval_x(spec):
        key = spec[len(BENCHMARK_PREFIX):]
        if key not in LANGUAGE_KEYS:
            raise ProblemFileError(f"benchmark {spec!r}: expected humaneval-x:LANG with LANG one of "
                                   f"{', '.join(LANGUAGE_KEYS)}")
        if lang is not None and lang != key:
            raise ProblemFileError(f"benchmark {spec!r} and --language {lang!r} disagree")
        path = default_path(key)
        if not path.is_file():
            raise ProblemFileError(f"benchmark {spec!r}: {path} not found; set MFT_SHARED_DATA or pass "
                                   f"--benchmark PATH --language {key}")
        return load_humaneval_x_file(path, key)
    path = Path(spec)
    if not path.is_file():
        raise ProblemFileError(f"benchmark {spec!r}: not an existing HumanEval-X JSONL file")
    return load_humaneval_x_file(path, lang, name=path.name)
