"""Where :mod:`mft_eval.api` branches for HumanEval-X: loading, executing, prompts, stops and candidates.

Each function does the Python benchmark's work (the function api passes in) unless the benchmark is HumanEval-X,
so api keeps one code path for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mft_eval.humaneval_x.dataset import XProblem, is_humaneval_x, load_humaneval_x
from mft_eval.problems import Benchmark, load_benchmark


def is_x(bench: Benchmark) -> bool:
    return bool(bench.problems) and isinstance(bench.problems[0], XProblem)


def load(spec: str, language: str | None) -> Benchmark:
    """``humaneval-x:LANG``, or a path with ``language`` set: HumanEval-X; anything else: ``load_benchmark``."""
    if is_humaneval_x(spec) or language is not None:
        return load_humaneval_x(spec, language)
    return load_benchmark(spec)


def execute(config, bench: Benchmark, samples: Sequence, python_execute: Callable, on_done=None) -> tuple:
    """(results, isolation) as ``scoring.execute`` returns them; for HumanEval-X the isolation dict also carries
    the language's settings under ``humaneval_x`` (moved into summary.json's settings by :func:`amend_summary`)."""
    if not is_x(bench):
        return python_execute(bench, samples, config.sandbox(), config.header, on_done=on_done)
    from mft_eval.humaneval_x.runner import execute_x

    timeout = config.timeout if "timeout" in config.model_fields_set else None  # else the language's own limit
    x = execute_x(bench, samples, config.workers, timeout, on_done=on_done)
    isolation = {"network_isolation": x.isolation.get("network"), "own_uid": x.isolation.get("uid") is not None,
                 "isolation": x.isolation, "humaneval_x": x.settings}
    return x.results, isolation


def amend_summary(summary: dict) -> dict:
    """HumanEval-X: the language's commands, limits and versions go to ``settings.humaneval_x`` and replace the
    Python sandbox's timeout, memory limit and guard."""
    sandbox = summary.get("settings", {}).get("sandbox", {})
    x = sandbox.pop("humaneval_x", None)
    if x is not None:
        summary["settings"]["humaneval_x"] = x
        summary["settings"]["timeout_s"] = x["limits"]["timeout_s"]
        sandbox.update(memory_mb=x["limits"]["address_space_mb"], guard=None, workers=x["workers"])
    return summary


def stops(config, mode: str, bench: Benchmark, python_stops: Callable) -> list[str]:
    if config.stop is not None:
        return list(config.stop)
    if is_x(bench):
        from mft_eval.humaneval_x.prompts import default_stops

        return default_stops(mode, bench.problems[0].language)
    return python_stops(mode, bench)


def prompts(bench: Benchmark, mode: str, tokenizer, python_build: Callable) -> list[str]:
    if is_x(bench):
        from mft_eval.humaneval_x.prompts import build_prompt

        return [build_prompt(p, mode, tokenizer) for p in bench.problems]
    return [python_build(p, mode, tokenizer) for p in bench.problems]


def candidate(problem, gen, mode: str, from_completion: Callable, from_answer: Callable) -> tuple[str, str, str]:
    """(program, completion, how) of one generation."""
    if isinstance(problem, XProblem):
        from mft_eval.humaneval_x import extract

        if mode == "base":  # codefuse's line rule on all that was generated (it keeps the closing brace)
            completion = extract.line_rule(problem.language, gen.raw_text)
            return problem.prompt + completion, completion, "prompt+completion"
        return extract.candidate_from_answer(problem, gen.text, mode)
    if mode == "base":
        return from_completion(gen.text, problem), gen.text, "prompt+completion"
    program, how = from_answer(gen.text, problem)
    return program, gen.text, how
