"""Problem loaders (HumanEval, MBPP in two layouts, any HumanEval-format JSONL), sample readers, extraction."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mft_eval.api import EvalConfig, load_results, load_summary, score
from mft_eval.extract import (
    BASE_STOPS,
    longest_valid_program,
    program_from_answer,
    truncate_at_stops,
)
from mft_eval.problems import (
    Problem,
    ProblemFileError,
    load_benchmark,
    load_humaneval,
    load_humaneval_format,
    load_mbpp,
    shared_data_dir,
)
from mft_eval.samples import SampleFileError, read_samples


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ADD = {
    "task_id": "Held/0",
    "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    "canonical_solution": "    return a + b\n",
}


def test_humaneval_loads_with_checked_sha256():
    bench = load_humaneval()
    assert len(bench.problems) == 164 and bench.problems[0].task_id == "HumanEval/0"
    assert bench.sha256.startswith("b796127e")


def test_humaneval_format_file_and_errors(tmp_path):
    bench = load_humaneval_format(write_jsonl(tmp_path / "p.jsonl", [ADD]))
    assert bench.problems[0].entry_point == "add" and len(bench.sha256) == 64
    bad = dict(ADD)
    del bad["entry_point"]
    with pytest.raises(ProblemFileError, match=r"p2.jsonl:1: missing key 'entry_point'"):
        load_humaneval_format(write_jsonl(tmp_path / "p2.jsonl", [bad]))
    with pytest.raises(ProblemFileError, match=r":2: duplicate task_id"):
        load_humaneval_format(write_jsonl(tmp_path / "p3.jsonl", [ADD, ADD]))
    (tmp_path / "p4.jsonl").write_text("{not json\n")
    with pytest.raises(ProblemFileError, match=r"p4.jsonl:1: not valid JSON"):
        load_humaneval_format(tmp_path / "p4.jsonl")
    with pytest.raises(ProblemFileError, match="not 'humaneval'"):
        load_benchmark(str(tmp_path / "missing.jsonl"))


MBPP_X = {
    "prompt": "Write a function to add two numbers.",
    "canonical_solution": "def add_nums(a, b):\r\n    return a + b",
    "task_id": "Python/11",
    "test_setup": "",
    "test": ["assert add_nums(1, 2) == 3", "assert add_nums(0, 0) == 0", "assert add_nums(-1, 1) == 0"],
    "challenge_test_list": [],
    "func_title": "def add_nums(a, b):",
}
MBPP_ORIGINAL = {
    "text": "Write a function to add two numbers.",
    "code": "def add_nums(a, b):\n    return a + b",
    "task_id": 11,
    "test_setup_code": "",
    "test_list": ["assert add_nums(1, 2) == 3", "assert add_nums(0, 0) == 0", "assert add_nums(-1, 1) == 0"],
    "challenge_test_list": [],
}


@pytest.mark.parametrize("record", [MBPP_X, MBPP_ORIGINAL], ids=["mbpp_x", "original"])
def test_mbpp_layouts_give_the_same_problem(record, tmp_path):
    bench = load_mbpp(write_jsonl(tmp_path / "mbpp.jsonl", [record]))
    problem = bench.problems[0]
    assert problem.task_id == "MBPP/11" and problem.entry_point == "add_nums" and not problem.prompt_is_code
    assert problem.prompt.startswith("You are an expert Python programmer, and here is your task: Write a function")
    assert "assert add_nums(-1, 1) == 0" in problem.prompt
    assert "def check(candidate):" in problem.test
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "MBPP/11", "completion": problem.canonical_solution}])
    summary = load_summary(score(EvalConfig(output=tmp_path / "out", benchmark=str(tmp_path / "mbpp.jsonl"),
                                            k=[1]), samples))
    assert summary["pass_at_k"]["1"] == 1.0


def test_mbpp_x_canonical_solutions_pass(tmp_path):
    path = shared_data_dir() / "codefuse-eval" / "mbpp_x.jsonl"
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} missing under CI=true")
        pytest.skip(f"shared data not found: {path}")
    bench = load_mbpp(path)
    assert len(bench.problems) == 500  # task ids 11..510, the MBPP test split
    samples = write_jsonl(tmp_path / "s.jsonl",
                          [{"task_id": p.task_id, "completion": p.canonical_solution} for p in bench.problems])
    out = score(EvalConfig(output=tmp_path / "out", benchmark=f"mbpp:{path}", k=[1]), samples)
    # measured here: 499 of 500 pass; MBPP/123's reference (amicable numbers below 9999) runs past 3 s
    failing = {r["task_id"] for r in load_results(out) if r["status"] != "passed"}
    assert failing <= {"MBPP/123"}, failing


def test_sample_readers_accept_three_formats(tmp_path):
    bench = load_humaneval_format(write_jsonl(tmp_path / "p.jsonl", [ADD]))
    rows = [
        {"task_id": "Held/0", "completion": "    return a + b\n"},
        {"task_id": "Python/0", "generation": "    return a - b\n"},
        {"task_id": "Held/0", "sample_index": 7, "program": "def add(a, b):\n    return b + a\n"},
    ]
    samples = read_samples(write_jsonl(tmp_path / "s.jsonl", rows), bench)
    assert [s.source_format for s in samples] == ["human-eval", "codefuse", "mft-eval"]
    assert [s.sample_index for s in samples] == [0, 1, 7]
    assert samples[0].program == ADD["prompt"] + "    return a + b\n"
    assert samples[2].program.startswith("def add(a, b):\n    return b + a")
    with pytest.raises(SampleFileError, match=r"s2.jsonl:1: task_id 'Other/5' is not a problem"):
        read_samples(write_jsonl(tmp_path / "s2.jsonl", [{"task_id": "Other/5", "completion": ""}]), bench)
    with pytest.raises(SampleFileError, match=r"s3.jsonl:1: no 'program', 'completion' or 'generation'"):
        read_samples(write_jsonl(tmp_path / "s3.jsonl", [{"task_id": "Held/0", "text": ""}]), bench)


def test_score_can_be_rerun_from_our_samples_file(tmp_path):
    problems = write_jsonl(tmp_path / "p.jsonl", [ADD])
    first = score(EvalConfig(output=tmp_path / "a", benchmark=str(problems), k=[1]),
                  write_jsonl(tmp_path / "s.jsonl", [{"task_id": "Held/0", "completion": "    return a + b\n"}]))
    again = score(EvalConfig(output=tmp_path / "b", benchmark=str(problems), k=[1]), first / "samples.jsonl")
    assert load_summary(again)["pass_at_k"] == load_summary(first)["pass_at_k"] == {"1": 1.0}
    assert load_summary(again)["settings"]["samples_format"] == ["mft-eval"]


def test_truncate_at_stops_cuts_at_the_earliest():
    text = "    return 1\n\ndef helper():\n    pass\nprint(1)"
    assert truncate_at_stops(text, BASE_STOPS) == "    return 1\n"
    assert truncate_at_stops("    return 1", BASE_STOPS) == "    return 1"


PROBLEM = Problem("T/0", "from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n", "f",
                  "def check(candidate):\n    assert candidate([1, 2]) == 3\n")


def test_program_from_answer_prefers_a_fenced_block_and_adds_prompt_imports():
    answer = "Here you go:\n```python\ndef f(xs: List[int]) -> int:\n    return sum(xs)\n```\nDone."
    program, how = program_from_answer(answer, PROBLEM)
    assert how == "fenced-block"
    assert program.startswith("from typing import List\n") and "return sum(xs)" in program


def test_program_from_answer_longest_valid_program_and_body_fallback():
    answer = "Sure.\ndef f(xs):\n    return sum(xs)\n\nThis sums the list."
    program, how = program_from_answer(answer, PROBLEM)
    assert how == "longest-valid-program" and "return sum(xs)" in program
    program, how = program_from_answer("    return sum(xs)\n", PROBLEM)
    assert how == "prompt+body" and program == PROBLEM.prompt + "    return sum(xs)\n"
    assert longest_valid_program("no code here", "f") is None


def test_chat_answers_holding_only_the_entry_function_pass_on_all_164(tmp_path):
    """A chat model answers with the entry function alone: imports and helpers the tests call (HumanEval/38's
    encode_cyclic, /32's poly, /10's is_palindrome) come from the prompt."""
    import ast

    bench = load_humaneval()
    rows = []
    for p in bench.problems:
        full = p.prompt + p.canonical_solution
        node = next(n for n in ast.parse(full).body if getattr(n, "name", None) == p.entry_point)
        answer = f"Here is the function:\n```python\n{ast.get_source_segment(full, node)}\n```\nIt works."
        program, how = program_from_answer(answer, p)
        assert how == "fenced-block"
        rows.append({"task_id": p.task_id, "sample_index": 0, "program": program})
    out = score(EvalConfig(output=tmp_path / "out", k=[1]), write_jsonl(tmp_path / "s.jsonl", rows))
    assert load_summary(out)["counts"]["passed"] == 164
