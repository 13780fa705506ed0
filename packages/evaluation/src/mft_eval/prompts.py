"""Prompt modes: how a problem becomes the text the model continues.

- ``base``: the raw problem prompt (HumanEval: the function signature and docstring), completion appended.
- ``chat``: one user turn (wording below, shared with the demo's synthetic training data) rendered with the
  checkpoint tokenizer's own ``chat_template`` and ``add_generation_prompt=True``.
- ``mftcoder``: MFTCoder's role template ``<s>human\\n{q}\\n<s>bot\\n`` with q = ``# language: Python\\n`` +
  the prompt, as used for the published CodeFuse numbers.
"""

from __future__ import annotations

from typing import Any, Literal

from mft_eval.problems import Problem

PromptMode = Literal["base", "chat", "mftcoder"]
CHAT_INSTRUCTION = (
    "Complete the following Python function. Answer with the whole function in a ```python code block."
    "\n\n```python\n{prompt}\n```"
)
MBPP_CHAT_SUFFIX = "\nAnswer with the whole function in a ```python code block."
MFTCODER_TEMPLATE = "<s>human\n{q}\n<s>bot\n"


def user_turn(problem: Problem) -> str:
    if problem.prompt_is_code:
        return CHAT_INSTRUCTION.format(prompt=problem.prompt.rstrip())
    return problem.prompt.rstrip() + "\n" + MBPP_CHAT_SUFFIX


def build_prompt(problem: Problem, mode: PromptMode, tokenizer: Any | None = None) -> str:
    if mode == "base":
        return problem.prompt
    if mode == "mftcoder":
        q = "# language: Python\n" + problem.prompt if problem.prompt_is_code else user_turn(problem)
        return MFTCODER_TEMPLATE.format(q=q)
    if mode == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt mode 'chat' needs a tokenizer with a chat_template (use --prompt-mode base)")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_turn(problem)}], tokenize=False, add_generation_prompt=True
        )
    raise ValueError(f"unknown prompt mode {mode!r}; expected base, chat or mftcoder")


def default_mode(tokenizer: Any | None) -> PromptMode:
    return "chat" if tokenizer is not None and getattr(tokenizer, "chat_template", None) else "base"
