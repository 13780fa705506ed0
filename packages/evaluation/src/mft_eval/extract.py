"""Turn a model's raw generation into the program to execute.

- ``base`` prompts: cut the completion at the first stop sequence; the program is prompt + completion.
- ``chat`` / ``mftcoder`` answers: the first fenced code block that defines the entry point, else the longest
  syntactically valid run of lines that defines it, else (a bare body) prompt + answer. Imports at the top of a
  HumanEval prompt (``from typing import List``) are prepended when the extracted program lacks them, since a
  model that rewrites the signature rarely repeats them.
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


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


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


def _prompt_imports(prompt: str) -> list[str]:
    return [ln for ln in prompt.splitlines() if ln.startswith(("import ", "from "))]


def with_prompt_imports(program: str, problem: Problem) -> str:
    missing = [ln for ln in _prompt_imports(problem.prompt) if ln not in program]
    return "\n".join(missing + [program]) if missing else program


def program_from_answer(answer: str, problem: Problem) -> tuple[str, str]:
    """(program, how) for a chat-style answer; ``how`` is recorded in samples.jsonl."""
    blocks = fenced_blocks(answer)
    for block in blocks:
        if defines(block, problem.entry_point):
            return with_prompt_imports(block, problem), "fenced-block"
    found = longest_valid_program(answer, problem.entry_point)
    if found is not None:
        return with_prompt_imports(found, problem), "longest-valid-program"
    body = blocks[0] if blocks else answer
    if problem.prompt_is_code:
        return problem.prompt + body, "prompt+body"
    return body, "raw-answer"


def program_from_completion(completion: str, problem: Problem) -> str:
    """Base mode: the completion continues the prompt (HumanEval) or is the program itself (MBPP)."""
    if problem.prompt_is_code:
        return problem.prompt + completion
    return completion
