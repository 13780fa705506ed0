"""The fixed wordings of the synthetic tasks: what the user turns say, word for word.

`EVAL_INSTRUCTION` is the team-wide chat wording mft-eval sends for a HumanEval-format problem; training records of
every executable task (text-to-code, translation, unit tests) use it verbatim, so the evaluator's chat mode asks
the model exactly what it was trained on. The task itself is carried by the problem's docstring:

    text_to_code   def NAME(ARGS):  \"\"\"Return ... .\"\"\"
    translation    def NAME(ARGS):  \"\"\"Translate this Lisp function into Python. <blank> (defn NAME ...)\"\"\"
    unit_tests     def test_NAME(): \"\"\"Write assert statements that test this function. <blank> def NAME...\"\"\"
"""

from __future__ import annotations

EVAL_INSTRUCTION = (
    "Complete the following Python function. Answer with the whole function in a ```python code block."
    "\n\n```python\n{prompt}\n```"
)
TRANSLATE_DOC = "Translate this Lisp function into Python."
UNIT_TEST_DOC = "Write assert statements that test this function."
COMPLETION_INSTRUCTION = (
    "Complete the following Python code. Answer with the whole function in a ```python code block."
    "\n\n```python\n{code}\n```"
)
EXPLAIN_INSTRUCTION = (
    "Write a one-line docstring for this Python function that says what it returns. "
    "Answer with the whole function in a ```python code block.\n\n```python\n{code}\n```"
)
# The unseen task's docstring. Not in ALL_WORDINGS: those words are kept out of generated names, and adding words
# there would change the names, hence the bytes, of every corpus.
REWRITE_DOC = "Rewrite the function f below under the name {name}."
LISP_WORDS = (
    "defn fn cond else if map filter reverse take take-last member length sort upcase downcase concat repeat"
)
ALL_WORDINGS = " ".join(
    (
        EVAL_INSTRUCTION,
        TRANSLATE_DOC,
        UNIT_TEST_DOC,
        COMPLETION_INSTRUCTION,
        EXPLAIN_INSTRUCTION,
        LISP_WORDS,
        "test",
    )
)


def eval_user_turn(prompt: str) -> str:
    """The user turn for a HumanEval-format prompt, exactly as mft-eval's chat mode builds it."""
    return EVAL_INSTRUCTION.format(prompt=prompt.rstrip())


def code_block(code: str) -> str:
    """An assistant answer: one fenced Python block."""
    return f"```python\n{code.rstrip()}\n```"
