"""``mft-eval run`` prompt modes for HumanEval-X (the Python modes of :mod:`mft_eval.prompts`, per language).

- ``base``: the problem's prompt (comment, declaration, the function opened); the completion continues it.
- ``chat``: one user turn asking for the whole function in a fenced block of the language, rendered with the
  tokenizer's ``chat_template``; the block is joined to the declaration (:mod:`mft_eval.humaneval_x.extract`).
- ``mftcoder``: MFTCoder's role template with ``// language: C++`` (``Java``, ``JavaScript``, ``Go``, ``Rust``)
  and a newline before the prompt, as codefuse-evaluation's CodeFuse processors build it.
"""

from __future__ import annotations

from typing import Any

from mft_eval.humaneval_x.languages import language
from mft_eval.prompts import MFTCODER_TEMPLATE

CHAT_INSTRUCTION = (
    "Complete the following {name} function. Answer with the whole function in a ```{fence} code block."
    "\n\n```{fence}\n{prompt}\n```"
)


def user_turn(problem) -> str:
    lang = language(problem.language)
    return CHAT_INSTRUCTION.format(name=lang.name, fence=lang.fence_tags[0], prompt=problem.prompt.rstrip())


def build_prompt(problem, mode: str, tokenizer: Any | None = None) -> str:
    lang = language(problem.language)
    if mode == "base":
        return problem.prompt
    if mode == "mftcoder":
        return MFTCODER_TEMPLATE.format(q=f"{lang.tag}\n{problem.prompt}")
    if mode == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt mode 'chat' needs a tokenizer with a chat_template (use --prompt-mode base)")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_turn(problem)}], tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt mode {mode!r}; expected base, chat or mftcoder")


def default_stops(mode: str, lang_key: str) -> list[str]:
    """Stop sequences that end generation early; the completion is then cut by the language's line rule."""
    if mode == "base":
        return list(language(lang_key).base_stops)
    if mode == "mftcoder":
        return ["<s>human", "\n<s>"]
    return []
