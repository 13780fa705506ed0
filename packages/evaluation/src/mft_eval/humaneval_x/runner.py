"""Score HumanEval-X samples: build each program's source, run its steps in the command sandbox, give a verdict.

Verdicts use the statuses of the Python path: ``passed``; ``failed`` (a compiler error, with its first error line
as the detail; a failing test; output from JavaScript's console.assert); ``timeout`` (the program's deadline,
compilation included, passed); ``error`` (the sandbox could not run it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mft_eval.humaneval_x.commands import LIMITS, Limits, Plan, describe, passed, plan
from mft_eval.humaneval_x.languages import build_source
from mft_eval.humaneval_x.pool import CommandPool
from mft_eval.humaneval_x.toolchains import Toolchain, detect
from mft_eval.problems import Benchmark
from mft_eval.samples import Sample
from mft_eval.scoring import SampleResult

_ERROR_LINE = re.compile(r"(error|Error|ERROR)[\[:]|: error |cannot find symbol|undefined:|expected ")


class ToolchainMissing(RuntimeError):
    """The language's toolchain is missing: the benchmark cannot be scored here (the reason is the message)."""


def require_toolchain(lang: str, prepare: bool = True) -> Toolchain:
    """The toolchain, or :class:`ToolchainMissing` with the reason; under ``CI=true`` the message says that all
    five languages must run there."""
    tc = detect(lang, prepare)
    if not tc.available:
        ci = " (CI=true: every HumanEval-X language must run)" if os.environ.get("CI") == "true" else ""
        raise ToolchainMissing(f"humaneval-x:{lang}: {tc.reason}{ci}")
    return tc


def first_error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in lines:
        if _ERROR_LINE.search(line):
            return line
    return lines[0] if lines else ""


def verdict(lang: str, reply: dict, n_steps: int, timeout: float) -> tuple[str, str]:
    """(status, detail) from the command server's reply."""
    if "error" in reply and not reply.get("steps"):
        return "error", str(reply["error"])
    steps = reply.get("steps", [])
    if passed(lang, steps, n_steps):
        return "passed", ""
    if not steps:
        return "error", "no step ran"
    last = steps[-1]
    if last["timed_out"]:
        return "timeout", f"no verdict within {timeout} s (killed during {last['name']})"
    if last["exit"] == "signal SIGXCPU":
        return "timeout", f"CPU time limit exceeded during {last['name']} (SIGXCPU)"
    output = last["output"]
    if last["name"] in ("compile", "check") or (lang == "go" and ("[build failed]" in output or "[setup failed]" in output)):
        return "failed", f"compilation error: {first_error_line(output)}"[:300]
    if lang == "js" and last["code"] == 0:
        return "failed", f"printed: {first_error_line(output)}"[:300]
    return "failed", f"{last['name']} exited with {last['exit']}: {first_error_line(output)}"[:300]


def source_for(problem, program: str) -> str:
    return build_source(problem.language, program, problem.prompt, problem.test, problem.go_import,
                        problem.go_test_setup)


@dataclass
class XExecution:
    results: list[SampleResult]
    isolation: dict
    settings: dict


def execute_x(bench: Benchmark, samples: Sequence[Sample], workers: int = 0, timeout: float | None = None,
              bubblewrap: bool = True, on_done: Callable[[int, object], None] | None = None) -> XExecution:
    """Run every sample's program in the command sandbox; ``timeout`` None = the language's default."""
    problems = bench.by_id()
    lang = bench.problems[0].language  # type: ignore[attr-defined]
    tc = require_toolchain(lang)
    base = LIMITS[lang]
    limits = Limits(timeout=timeout or base.timeout, memory_mb=base.memory_mb, max_processes=base.max_processes,
                    max_file_mb=base.max_file_mb, worker_memory_mb=base.worker_memory_mb)
    plans: list[Plan] = []
    for s in samples:
        problem = problems[s.task_id]
        plans.append(plan(lang, tc, source_for(problem, s.program), problem.prompt, limits.timeout))
    with CommandPool(workers, limits, tc.ro_binds, bubblewrap) as pool:
        isolation = pool.isolation
        replies = pool.run_many(plans, limits.timeout, on_done)
        n_workers = len(pool.sandboxes)
    results = []
    for s, p, reply in zip(samples, plans, replies, strict=True):
        status, detail = verdict(lang, reply, len(p.steps), limits.timeout)
        results.append(SampleResult(s.task_id, s.sample_index, status, detail, float(reply.get("seconds", 0.0))))
    settings = {**describe(lang, tc, limits), "workers": n_workers}
    return XExecution(results, isolation, settings)
