"""The five HumanEval-X languages and how a candidate becomes the source file that is built, as codefuse-evaluation
(``codefuseEval/evaluation.py::process_humaneval_test``) builds it.

A *candidate* is the function's source: the problem's prompt plus the model's completion (base mode), or the
declaration joined to a chat answer (see :mod:`mft_eval.humaneval_x.extract`). The built file is::

    cpp   codefuse's include helpers the prompt lacks  + "\\n" + candidate + "\\n" + test     -> test.cpp
    java  candidate + "\\n" + test                                                           -> Main.java
    js    candidate + "\\n" + test                                                           -> test.js
    go    test_setup + "\\n" + import (...) of the helper packages the completion uses
          + "\\n" + candidate without the prompt's own import + "\\n" + test                  -> main_test.go
    rust  "\\nfn main(){ \\n } \\n" + candidate + test                                        -> main.rs

Go refuses unused imports, so the prompt's ``import`` block is dropped and only the packages among
:data:`GO_HELPER_PACKAGES` whose ``name.`` occurs in the completion are imported (codefuse's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LanguageKey = Literal["cpp", "java", "js", "go", "rust"]
LANGUAGE_KEYS: tuple[LanguageKey, ...] = ("cpp", "java", "js", "go", "rust")

# codefuseEval/util.py IMPORT_HELPER["cpp"], in its order; a line is added when the prompt does not contain it.
CPP_HELPERS = (
    "#include<stdlib.h>", "#include<algorithm>", "#include<math.h>", "#include<stdio.h>", "#include<vector>",
    "#include<string>", "#include<climits>", "#include<cstring>", "#include<iostream>", "#include <stdexcept>",
)
# codefuseEval/util.py IMPORT_HELPER["go"]
GO_HELPER_PACKAGES = ("math", "strings", "fmt", "strconv", "time", "bytes", "regexp", "sort", "math/rand",
                      "crypto/md5")
RUST_MAIN = "\nfn main(){ \n } \n"


@dataclass(frozen=True)
class Language:
    key: LanguageKey
    name: str  # as in "// language: C++" (codefuse's LANGUAGE_TAG)
    task_prefix: str  # the data's task ids: CPP/0, Java/0, ...
    source_file: str
    fence_tags: tuple[str, ...]  # info strings of a fenced block in this language
    # base mode: generation stops at the first of these (the completion is then cut by the line rule of extract.py)
    base_stops: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"// language: {self.name}"


LANGUAGES: dict[str, Language] = {
    "cpp": Language("cpp", "C++", "CPP", "test.cpp", ("cpp", "c++", "cc", "cxx", "c"),
                    ("\nint main", "\n```", "\n#include", "\n/*\n", "\n\n\n\n")),
    "java": Language("java", "Java", "Java", "Main.java", ("java",),
                     ("\n}\n", "\n}", "\npublic class Main", "\n```")),
    "js": Language("js", "JavaScript", "JavaScript", "test.js", ("javascript", "js", "node"),
                   ("\n}\n", "\n};\n", "\nconst test", "\nconsole.log", "\n```")),
    "go": Language("go", "Go", "Go", "main_test.go", ("go", "golang"),
                   ("\n}\n", "\nfunc Test", "\n```", "\npackage ")),
    "rust": Language("rust", "Rust", "Rust", "main.rs", ("rust", "rs"),
                     ("\n}\n", "\n#[cfg(test)]", "\nfn main", "\n```")),
}
PREFIX_TO_KEY = {lang.task_prefix.lower(): lang.key for lang in LANGUAGES.values()}


def language(key: str) -> Language:
    try:
        return LANGUAGES[key]
    except KeyError:
        raise ValueError(f"unknown HumanEval-X language {key!r}; expected one of {', '.join(LANGUAGE_KEYS)}") from None


def go_used_packages(completion: str, test_setup: str) -> list[str]:
    """codefuse's rule: a helper package not already in test_setup is imported when ``name.`` is in the completion."""
    return [pkg for pkg in GO_HELPER_PACKAGES if pkg not in test_setup and pkg.split("/")[-1] + "." in completion]


def build_source(key: str, candidate: str, prompt: str, test: str, go_import: str = "", go_test_setup: str = "") -> str:
    """The file that is compiled (and run) for ``candidate`` against the problem's ``test``."""
    if key == "cpp":
        helpers = "".join(line + "\n" for line in CPP_HELPERS if line not in prompt)
        return helpers + "\n" + candidate + "\n" + test
    if key in ("java", "js"):
        return candidate + "\n" + test
    if key == "go":
        completion = candidate[len(prompt):] if candidate.startswith(prompt) else candidate
        body = candidate.replace(go_import, "", 1) if go_import else candidate
        packages = go_used_packages(completion, go_test_setup)
        if packages:
            imports = "import (\n" + "    ".join(f'"{p}"\n' for p in packages) + ")"
            return go_test_setup + "\n" + imports + "\n" + body + "\n" + test
        return go_test_setup + "\n" + body + "\n" + test
    if key == "rust":
        return RUST_MAIN + candidate + test
    raise ValueError(f"unknown HumanEval-X language {key!r}")
