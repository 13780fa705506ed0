"""HumanEval-X generation: prompt modes per language, the completion's line rule, chat answers joined to the
declaration (checked by running them), and ``mft-eval run`` end to end with the tiny CPU model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from humaneval_x_testkit import need_language as _need
from mft_eval.api import EvalConfig, load_results, load_summary, run, score
from mft_eval.generate import load_tokenizer
from mft_eval.humaneval_x.dataset import default_path, load_humaneval_x
from mft_eval.humaneval_x.extract import candidate_from_answer, line_rule
from mft_eval.humaneval_x.languages import LANGUAGE_KEYS, LANGUAGES
from mft_eval.humaneval_x.prompts import build_prompt, default_stops, user_turn
from mft_eval.outputs import read_jsonl

# a main after the function, as chat answers often add one; the test brings its own
TRAILING_MAIN = {"cpp": "\nint main() {\n    return 0;\n}\n", "java": "\npublic class Main {\n    public static void "
                 "main(String[] args) {}\n}\n", "js": "", "go": "", "rust": "\nfn main() {\n    println!(\"hi\");\n}\n"}


def _problem(lang: str, index: int = 0):
    if not default_path(lang).is_file():
        pytest.skip(f"shared data not found: {default_path(lang)}")
    return load_humaneval_x(f"humaneval-x:{lang}").problems[index]


@pytest.mark.parametrize("lang", LANGUAGE_KEYS)
def test_prompt_modes(lang, tiny_checkpoint):
    problem = _problem(lang)
    name = LANGUAGES[lang].name
    assert build_prompt(problem, "base") == problem.prompt
    assert build_prompt(problem, "mftcoder") == f"<s>human\n// language: {name}\n{problem.prompt}\n<s>bot\n"
    chat = build_prompt(problem, "chat", load_tokenizer(tiny_checkpoint))
    fence = LANGUAGES[lang].fence_tags[0]
    assert chat == f"<|user|>\n{user_turn(problem)}\n<|assistant|>\n"
    assert user_turn(problem).startswith(f"Complete the following {name} function. Answer with the whole function "
                                         f"in a ```{fence} code block.\n\n```{fence}\n")
    assert default_stops("base", lang) and default_stops("chat", lang) == []


def test_line_rule_is_codefuses():
    assert line_rule("cpp", "    return 1;\n}\nint main(){\n}\n") == "    return 1;\n}\n"
    assert line_rule("java", "        return 1;\n    }\n}\nclass X {}\n") == "        return 1;\n    }\n}\n"
    assert line_rule("go", "    return 1\n}\n\nfunc main() {}\n") == "    return 1\n}\n"
    assert line_rule("js", "  return 1\n};\nconsole.log(1)\n") == "  return 1\n};\n"
    assert line_rule("rust", "    1\n}") == "    1\n}\n"


@pytest.mark.parametrize("lang", LANGUAGE_KEYS)
def test_chat_answers_joined_to_the_declaration_pass(lang, tmp_path):
    """The canonical solution as a chat answer: the whole function, the whole function followed by a main, and
    only the body; each candidate must build and pass in the sandbox."""
    _need(lang)
    problem = _problem(lang)
    fence = LANGUAGES[lang].fence_tags[0]
    function = problem.declaration + problem.canonical_solution
    answers = [f"Here it is:\n```{fence}\n{function}```\n",
               f"```{fence}\n{function}{TRAILING_MAIN[lang]}```",
               f"```{fence}\n{problem.canonical_solution}```"]
    rows, hows = [], []
    for answer in answers:
        program, completion, how = candidate_from_answer(problem, answer, "chat")
        rows.append({"task_id": problem.task_id, "program": program, "completion": completion})
        hows.append(how)
    assert hows == ["fenced-block+declaration", "fenced-block+declaration", "declaration+fenced-body"]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = score(EvalConfig(output=tmp_path / "out", benchmark=f"humaneval-x:{lang}", limit=1, k=[1]), path)
    assert [r["status"] for r in load_results(out)] == ["passed"] * 3, load_results(out)


@pytest.mark.parametrize("mode", ["base", "chat", "mftcoder"])
@pytest.mark.parametrize("lang", LANGUAGE_KEYS)
def test_run_end_to_end_per_language_and_mode(lang, mode, tiny_checkpoint, tmp_path):
    _need(lang)
    config = EvalConfig(model=str(tiny_checkpoint), benchmark=f"humaneval-x:{lang}", output=tmp_path / "out",
                        prompt_mode=mode, max_new_tokens=12, batch_size=1, k=[1], limit=1)
    out = run(config)
    summary = load_summary(out)
    (sample,) = read_jsonl(Path(out) / "samples.jsonl")
    problem = _problem(lang)
    assert summary["settings"]["prompt_mode"] == mode and summary["settings"]["humaneval_x"]["language"] == lang
    assert sum(summary["counts"].values()) == 1 and summary["counts"]["error"] == 0
    assert sample["task_id"] == problem.task_id and sample["num_tokens"] <= 12
    if mode == "base":
        assert sample["prompt"] == problem.prompt and sample["program"] == problem.prompt + sample["completion"]
        assert summary["settings"]["stop"] == list(LANGUAGES[lang].base_stops)
    elif mode == "mftcoder":
        assert sample["prompt"].startswith(f"<s>human\n// language: {LANGUAGES[lang].name}\n")
    else:
        assert sample["prompt"].startswith(f"<|user|>\nComplete the following {LANGUAGES[lang].name} function.")
