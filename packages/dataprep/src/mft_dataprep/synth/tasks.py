"""Render a `Program` as a training record of each task, or as a HumanEval-format held-out problem.

Training records (the raw formats mft-prep reads):

    chat_rounds  {"id": 7, "data_name": "synth-text_to_code", "chat_rounds": [
                   {"role": "human", "content": USER, "chat_round_id": 0},
                   {"role": "bot", "content": "```python\\n...\\n```", "chat_round_id": 1}]}
    pairs        {"instruction": USER, "output": "```python\\n...\\n```"}

Held-out problems: {"task_id", "prompt", "entry_point", "canonical_solution", "test"}, where `prompt +
canonical_solution` is the reference program and `test` defines `check(candidate)`. For unit tests the candidate
is the generated test function: `check` runs it against the reference implementation (it must pass) and against
a mutant (it must fail), swapping the function under test in the module's globals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .ops import Program, call_text, sample_args
from .program import Node, mutants, py_body, py_value
from .wording import (
    COMPLETION_INSTRUCTION,
    EXPLAIN_INSTRUCTION,
    REWRITE_DOC,
    TRANSLATE_DOC,
    UNIT_TEST_DOC,
    code_block,
    eval_user_turn,
)


class GenerationError(RuntimeError):
    """The generator could not build something it must (e.g. no test input tells a mutant apart)."""


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


def prompt_for(task: str, program: Program) -> str:
    """The HumanEval-style prompt (signature + docstring, ending in a newline) of an executable task."""
    if task == "text_to_code":
        return f'{program.signature}\n    """{program.doc}"""\n'
    if task == "translation":
        return f'{program.signature}\n    """{TRANSLATE_DOC}\n\n    {program.lisp()}\n    """\n'
    if task == "unit_tests":
        shown = _indent(program.source(docstring=False))
        return f'def {test_name(program)}():\n    """{UNIT_TEST_DOC}\n\n{shown}\n    """\n'
    if task == "rewrite":  # the unseen task: the same function in Python, to copy under a new name
        shown = _indent("def f" + program.signature[4 + len(program.name):] + "\n" + "\n".join(program.body_lines()))
        return f'{program.signature}\n    """{REWRITE_DOC.format(name=program.name)}\n\n{shown}\n    """\n'
    raise ValueError(f"{task!r} has no HumanEval-style prompt")


def test_name(program: Program) -> str:
    return f"test_{program.name}"


def entry_point(task: str, program: Program) -> str:
    return test_name(program) if task == "unit_tests" else program.name


def problem_identifiers(task: str, program: Program) -> tuple[str, ...]:
    extra = (test_name(program),) if task == "unit_tests" else ()
    return (program.name, *program.params, *extra)


@dataclass(frozen=True)
class Behaviour:
    """Inputs with the reference outputs, and a mutant body that those inputs tell apart from the reference."""

    inputs: tuple[tuple[Any, ...], ...]
    outputs: tuple[Any, ...]
    mutant: Node


def _run(fn: Any, args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, fn(*[list(a) if isinstance(a, list) else a for a in args])
    except Exception as err:  # a mutant may crash (e.g. len -> sum on a string): that is a difference too
        return False, type(err).__name__


def _same(a: tuple[bool, Any], b: tuple[bool, Any]) -> bool:
    """Equal as an `assert ... == ...` sees it (both ran and compare equal, or both raised the same error)."""
    return a[0] == b[0] and a[1] == b[1]


def behaviour(program: Program, rng: random.Random, count: int) -> Behaviour:
    """`count` distinct inputs on which the reference runs, and a mutant that one of them exposes."""
    reference = program.compile()
    types = dict(zip(program.params, program.types, strict=True))
    candidates = list(dict.fromkeys(mutants(program.body, types)))  # dedupe, keep the deterministic order
    rng.shuffle(candidates)
    compiled = [(m, program.compile(m)) for m in candidates]
    for _ in range(50):
        inputs: list[tuple[Any, ...]] = []
        for _ in range(count * 20):
            args = sample_args(program, rng)
            if args not in inputs and _run(reference, args)[0]:
                inputs.append(args)
            if len(inputs) == count:
                break
        if len(inputs) < count:
            continue
        expected = [_run(reference, a) for a in inputs]
        runs = [(mutant, [_run(fn, a) for a in inputs]) for mutant, fn in compiled]
        # Prefer a mutant that runs on every input and returns a wrong value: only asserts can catch it. One
        # that crashes (len -> sum on a string) is caught by merely calling it, so it is the last resort.
        for must_run in (True, False):
            for mutant, got in runs:
                if must_run and not all(ok for ok, _ in got):
                    continue
                if any(not _same(e, g) for e, g in zip(expected, got, strict=True)):
                    return Behaviour(tuple(inputs), tuple(value for _, value in expected), mutant)
    raise GenerationError(
        f"{program.op} {program.name}: no {count} inputs expose any of {len(candidates)} mutants"
    )


def _answer(task: str, program: Program, prompt: str, body: list[str], docstring: bool) -> str:
    if docstring:
        return prompt.rstrip("\n") + "\n" + "\n".join(body)
    header = f"def {test_name(program)}():" if task == "unit_tests" else program.signature
    return header + "\n" + "\n".join(body)


def _assert_lines(program: Program, found: Behaviour) -> list[str]:
    return [
        f"    assert {call_text(program.name, args)} == {py_value(out)}"
        for args, out in zip(found.inputs, found.outputs, strict=True)
    ]


def solution_lines(task: str, program: Program, found: Behaviour | None) -> list[str]:
    """The body lines that complete the task's prompt."""
    if task == "unit_tests":
        if found is None:
            raise ValueError("unit_tests needs a Behaviour for its asserts")
        return _assert_lines(program, found)
    return program.body_lines()


def chat_record(index: int, task: str, user: str, assistant: str) -> dict[str, Any]:
    return {
        "id": index,
        "data_name": f"synth-{task}",
        "chat_rounds": [
            {"role": "human", "content": user, "chat_round_id": 0},
            {"role": "bot", "content": assistant, "chat_round_id": 1},
        ],
    }


def pair_record(user: str, assistant: str) -> dict[str, Any]:
    return {"instruction": user, "output": assistant}


def training_turns(
    task: str, program: Program, rng: random.Random, unit_test_asserts: int, docstring: bool
) -> tuple[str, str]:
    """(user, assistant) of one training record of `task`."""
    if task in ("text_to_code", "translation", "unit_tests"):
        prompt = prompt_for(task, program)
        found = behaviour(program, rng, unit_test_asserts) if task == "unit_tests" else None
        body = solution_lines(task, program, found)
        return eval_user_turn(prompt), code_block(_answer(task, program, prompt, body, docstring))
    if task == "code_explanation":
        return (
            EXPLAIN_INSTRUCTION.format(code=program.source(docstring=False)),
            code_block(program.source(docstring=True)),
        )
    if task == "code_completion":
        full = program.source(docstring=False)
        body_text = "\n".join(program.body_lines())
        cuts = [0] + [
            i for i in range(1, len(body_text)) if body_text[i - 1].isalnum() != body_text[i].isalnum()
        ]
        cut = rng.choice(cuts)
        prefix = (program.signature + "\n" + body_text[:cut]).rstrip()
        return COMPLETION_INSTRUCTION.format(code=prefix), code_block(full)
    raise ValueError(f"unknown task {task!r}")


def heldout_problem(
    task_id: str, task: str, program: Program, rng: random.Random, asserts: int
) -> tuple[dict[str, Any], Behaviour]:
    """A HumanEval-format problem whose `test` passes the reference and rejects a mutant (returned too)."""
    found = behaviour(program, rng, asserts)
    prompt = prompt_for(task, program)
    solution = "\n".join(solution_lines(task, program, found)) + "\n"
    if task == "unit_tests":
        reference = "\n".join(
            ["def _synth_reference" + program.signature[4 + len(program.name) :], *program.body_lines()]
        )
        mutant = "\n".join(
            ["def _synth_mutant" + program.signature[4 + len(program.name) :], *py_body(found.mutant)]
        )
        test = (
            f"{reference}\n\n\n{mutant}\n\n\n"
            "def check(candidate):\n"
            "    namespace = globals()\n"
            f"    namespace[{program.name!r}] = _synth_reference\n"
            "    candidate()\n"
            f"    namespace[{program.name!r}] = _synth_mutant\n"
            "    try:\n"
            "        candidate()\n"
            "    except Exception:\n"
            "        return\n"
            f"    raise AssertionError('the test accepted a mutated {program.name}')\n"
        )
    else:
        lines = [
            f"    assert {call_text('candidate', args)} == {py_value(out)}"
            for args, out in zip(found.inputs, found.outputs, strict=True)
        ]
        test = "def check(candidate):\n" + "\n".join(lines) + "\n"
    problem = {
        "task_id": task_id,
        "prompt": prompt,
        "entry_point": entry_point(task, program),
        "canonical_solution": solution,
        "test": test,
    }
    return problem, found


def mutant_program(task: str, problem: dict[str, Any], program: Program, mutant: Node) -> str:
    """A wrong answer to `problem` built from a mutated body (used to prove that `check` rejects it)."""
    if task == "unit_tests":
        # A test that only checks the function does not crash: passes the reference, cannot reject a mutant.
        call = call_text(program.name, sample_args(program, random.Random(0)))
        return problem["prompt"] + f"    {call}\n"
    return problem["prompt"] + "\n".join(py_body(mutant)) + "\n"
