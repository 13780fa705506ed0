"""Turn a model's raw generation into the program to execute.

- ``base`` prompts: cut the completion at the first stop sequence; the program is prompt + completion.
- ``chat`` / ``mftcoder`` answers: the first fenced code block that defines the entry point, else the longest
  syntactically valid run of lines that defines it, else (a bare body) prompt + answer. What the prompt defines
  besides the entry point (imports such as ``from typing import List``, helpers the tests call) is prepended when
  the extracted program lacks it, since a model that rewrites the function rarely repeats them.
"""

from __future__ import annotations

import ast
import re

from mft_eval.problems import Problem

BASE_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n@", "\n```"]
MBPP_BASE_STOPS = ["\nassert", "\n```", '\n"""', "\nif __name__", "\nprint"]
_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def truncate_at_stops(text: str, stops: list[str]) -> str:
    """The text up to the earliest stop sequence (all of it when none occurs)."""
    cut = len(text)
    for stop in stops:
        if stop:
            index = text.find(stop)
            if index != -1:
                cut = min(cut, index)
    return text[:cut]


def defines(source: str, name: str) -> bool:
    """True when ``source`` parses and defines ``name`` at top level (function, class or assignment)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


def fenced_blocks(text: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(text)]


def longest_valid_program(text: str, entry_point: str) -> str | None:
    """The longest contiguous run of lines that parses and defines ``entry_point``."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln and not ln[0].isspace()]
    best: str | None = None
    for i in starts:
        for j in range(len(lines), i, -1):
            if best is not None and j - i <= best.count("\n") + 1:
                break
            candidate = "\n".join(lines[i:j])
            if defines(candidate, entry_point):
                best = candidate
                break
    return best


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def with_prompt_context(program: str, problem: Problem) -> str:
    """Prepend what the prompt defines besides the entry point and the program lacks: its imports and helpers
    (HumanEval/38's ``encode_cyclic``, /32's ``poly``), which the tests call and a chat answer rarely repeats."""
    if not problem.prompt_is_code:
        return program
    source = problem.prompt + "    pass\n"  # a HumanEval prompt ends inside the entry point, after its docstring
    try:
        prompt_tree = ast.parse(source)
        have = _top_level_names(ast.parse(program))
    except SyntaxError:
        return program
    pieces = []
    for node in prompt_tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not {(a.asname or a.name).split(".")[0] for a in node.names} <= have or isinstance(node, ast.ImportFrom):
                segment = ast.get_source_segment(source, node)
                if segment and segment not in program:
                    pieces.append(segment)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign)):
            names = _top_level_names(ast.Module(body=[node], type_ignores=[]))
            if problem.entry_point in names or names <= have:
                continue
            segment = ast.get_source_segment(source, node)
            if segment:
                decorators = "".join(f"@{ast.get_source_segment(source, d)}\n" for d in getattr(node, "decorator_list", []))
                pieces.append(decorators + segment)
    return "\n\n".join([*pieces, program]) if pieces else program


def program_from_answer(answer: str, problem: Problem) -> tuple[str, str]:
    """(program, how) for a chat-style answer; ``how`` is recorded in samples.jsonl."""
    blocks = fenced_blocks(answer)
    for block in blocks:
        if defines(block, problem.entry_point):
            return with_prompt_context(block, problem), "fenced-block"
    found = longest_valid_program(answer, problem.entry_point)
    if found is not None:
        return with_prompt_context(found, problem), "longest-valid-program"
    body = blocks[0] if blocks else answer
    if problem.prompt_is_code:
        return problem.prompt + body, "prompt+body"
    return body, "raw-answer"


def program_from_completion(completion: str, problem: Problem) -> str:
    """Base mode: the completion continues the prompt (HumanEval) or is the program itself (MBPP)."""
    if problem.prompt_is_code:
        return problem.prompt + completion
    return completion
