"""Reproduce HumanEval-X's reference numbers per language (benchmarks/expected.json, section ``humaneval_x``):
every canonical solution scored in the sandbox, and a trivially wrong body (abort / throw / panic /
unimplemented) for every problem.

The canonical pass count and the set of failing canonical solutions must equal expected.json's, and every wrong
body must fail except the problems expected.json names with the reason (a test that never calls the function).
Slow (164 builds per language, twice): run by ``make test-slow`` and in CI, where all five languages must run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from humaneval_x_testkit import need_language as _need
from mft_eval.api import EvalConfig, load_results, load_summary, score
from mft_eval.humaneval_x.dataset import load_humaneval_x
from mft_eval.humaneval_x.languages import LANGUAGE_KEYS

EXPECTED = json.loads((Path(__file__).resolve().parents[3] / "benchmarks" / "expected.json").read_text())["humaneval_x"]


def _score(lang: str, rows: list[dict], out: Path) -> list[dict]:
    samples = out.with_suffix(".jsonl")
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    score(EvalConfig(output=out, benchmark=f"humaneval-x:{lang}", k=[1]), samples)
    return load_results(out)


def test_expected_section_is_complete():
    assert set(EXPECTED["languages"]) == set(LANGUAGE_KEYS) == set(EXPECTED["wrong_bodies"])
    for lang, entry in EXPECTED["languages"].items():
        assert entry["canonical_passed"] + len(entry["canonical_failures"]) == entry["problems"] == 164, lang
        assert all(f["verdict"] and f["reason"] for f in entry["canonical_failures"].values()), lang
        assert all(entry["wrong_body_passes"].values()), lang


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGUAGE_KEYS)
def test_canonical_solutions_and_wrong_bodies(lang, tmp_path):
    _need(lang)
    expected = EXPECTED["languages"][lang]
    problems = load_humaneval_x(f"humaneval-x:{lang}").problems
    canonical = _score(lang, [{"task_id": p.task_id, "generation": p.canonical_solution} for p in problems],
                       tmp_path / "canonical")
    failing = {r["task_id"]: f"{r['status']}: {r['detail']}" for r in canonical if r["status"] != "passed"}
    assert sum(r["status"] == "passed" for r in canonical) == expected["canonical_passed"], failing
    assert set(failing) == set(expected["canonical_failures"]), failing
    for task, detail in failing.items():  # the recorded reason is the start of the verdict's detail
        assert detail.startswith(expected["canonical_failures"][task]["verdict"]), (task, detail)
    summary = load_summary(tmp_path / "canonical")
    assert summary["num_problems"] == 164 and not summary.get("partial")
    wrong = _score(lang, [{"task_id": p.task_id, "completion": EXPECTED["wrong_bodies"][lang]} for p in problems],
                   tmp_path / "wrong")
    passing = {r["task_id"] for r in wrong if r["status"] == "passed"}
    assert passing == set(expected["wrong_body_passes"]), passing
