"""Turn a generation into the candidate (the function's source) for HumanEval-X.

- base: codefuse-evaluation's line rule (``BaseProcessor._process_generation``): C++ keeps the lines before one
  that starts with ``int main``; Java, JavaScript, Go and Rust keep the lines up to and including the first line
  that is exactly ``}`` or ``};`` (the function's, or for Java the class's, closing brace). candidate = prompt +
  completion.
- chat / mftcoder: the first fenced block in the language (or untagged). When it defines the entry point it is
  joined to the declaration as the harnesses do: the declaration's includes / imports / ``use`` lines that the
  block lacks are put before it; a Java method is put inside ``class Solution {``; the block's own ``main`` (C++,
  Rust) and a Java ``class Main`` are dropped, since the test brings its own; Go's package clause and imports are
  dropped (the test setup has the package clause, and the packages the code uses are imported for it). A block
  that does not define the entry point is a body: candidate = declaration + block. With no block, mftcoder's
  answer is a completion (codefuse's processing), chat's is a body.
"""

from __future__ import annotations

import re

from mft_eval.humaneval_x.languages import language

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def line_rule(lang: str, text: str) -> str:
    """codefuse's ``_process_generation`` for ``lang``."""
    out = []
    for line in text.split("\n"):
        if lang == "cpp":
            if line.startswith("int main"):
                break
            out.append(line)
        else:
            out.append(line)
            if line in ("}", "};"):
                break
    result = "\n".join(out)
    return result + "\n" if result and not result.endswith("\n") else result


def fenced_block(text: str, lang: str) -> str | None:
    tags = language(lang).fence_tags
    for match in _FENCE.finditer(text):
        if match.group(1).lower() in tags or not match.group(1):
            return match.group(2)
    return None


def _defines(lang: str, code: str, name: str) -> bool:
    n = re.escape(name)
    patterns = {
        "cpp": rf"\b{n}\s*\([^;{{}}]*\)\s*\{{",
        "java": rf"\b{n}\s*\([^;{{}}]*\)\s*(?:throws [\w., ]+)?\{{",
        "js": rf"(?:function\s+{n}\b|\b(?:const|let|var)\s+{n}\s*=)",
        "go": rf"\bfunc\s+{n}\s*\(",
        "rust": rf"\bfn\s+{n}\b",
    }
    return re.search(patterns[lang], code) is not None


def _drop_braced(code: str, start_pattern: str) -> str:
    """``code`` without the item that starts at ``start_pattern`` (through its matching closing brace)."""
    match = re.search(start_pattern, code)
    if match is None:
        return code
    open_at = code.find("{", match.end() - 1)
    if open_at == -1:
        return code
    depth = 0
    for i in range(open_at, len(code)):
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        if depth == 0:
            return code[: match.start()] + code[i + 1 :]
    return code[: match.start()]


def _header(declaration: str, name_pattern: str) -> list[str]:
    """The declaration's lines before the signature (includes, imports, ``use`` lines)."""
    lines = declaration.strip("\n").split("\n")
    for i, line in enumerate(lines):
        if re.search(name_pattern, line):
            return lines[:i]
    return lines[:-1]


def join_to_declaration(problem, block: str) -> str:
    """The candidate for a fenced block (see the module docstring)."""
    lang, name, decl = problem.language, problem.entry_point, problem.declaration
    if not _defines(lang, block, name):
        return decl + block
    if lang == "cpp":
        code = block.split("\nint main")[0] if "\nint main" in "\n" + block else block
        code = code if not code.startswith("int main") else ""
        header = [ln for ln in _header(decl, rf"\b{re.escape(name)}\s*\(") if ln.strip() and ln.strip() not in code]
        return "\n".join([*header, code])
    if lang == "java":
        code = re.split(r"\n(?:public\s+)?class\s+Main\b", "\n" + block)[0].lstrip("\n")
        imports = [ln for ln in decl.split("\n") if ln.startswith("import") and ln not in code]
        if re.search(r"\bclass\s+Solution\b", code):
            return "\n".join([*imports, code])
        return "\n".join([*imports, "class Solution {", code, "}"]) + "\n"
    if lang == "js":
        return block
    if lang == "go":
        code = re.sub(r"^\s*package\s+\w+\s*$", "", block, flags=re.MULTILINE)
        code = re.sub(r"^\s*import\s*\([^)]*\)", "", code, flags=re.MULTILINE)
        return re.sub(r'^\s*import\s+(?:\w+\s+)?"[^"]*"\s*$', "", code, flags=re.MULTILINE)
    if lang == "rust":
        code = _drop_braced(block, r"\bfn\s+main\s*\(\s*\)[^{]*\{")
        header = [ln for ln in _header(decl, r"\bfn\s+") if ln.strip() and ln.strip() not in code]
        return "\n".join([*header, code])
    raise ValueError(f"unknown HumanEval-X language {lang!r}")


def candidate_from_completion(problem, raw: str) -> str:
    """Base mode: the prompt continued by the completion cut with the line rule."""
    return problem.prompt + line_rule(problem.language, raw)


def candidate_from_answer(problem, raw: str, mode: str) -> tuple[str, str, str]:
    """(candidate, completion, how) for a chat or mftcoder answer; ``how`` is recorded in samples.jsonl."""
    block = fenced_block(raw, problem.language)
    if block is not None:
        how = "fenced-block+declaration" if _defines(problem.language, block, problem.entry_point) else \
            "declaration+fenced-body"
        return join_to_declaration(problem, block), block, how
    if mode == "mftcoder":
        completion = line_rule(problem.language, raw)
        return problem.prompt + completion, completion, "prompt+completion"
    return problem.declaration + raw, raw, "declaration+body"
