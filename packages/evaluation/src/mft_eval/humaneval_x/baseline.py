"""codefuse-evaluation's way of running HumanEval-X programs, for comparison: no sandbox, a thread pool calling
``subprocess.run`` for each step (``codefuseEval/execution.py::check_correctness``).

- cpp, java, js: a fresh directory per program, the same commands as ours (``g++ -std=c++11 test.cpp`` and
  ``./a.out``; ``javac Main.java`` and ``java -cp DIR Main``; ``node test.js``, failing on any output).
- go: ``go test -timeout=Ts main_test.go`` in a fresh directory, with one build cache shared (and written) by all.
- rust: one shared cargo project (codefuse's ``rust/`` directory), the program written to ``src/bin/NAME.rs``,
  then ``cargo check --bin NAME`` and ``cargo test --bin NAME``; cargo holds the project's build-directory lock,
  so programs of one project build one at a time, as in codefuse-evaluation.

Used by ``benchmarks/eval_speed.py --language`` (the baseline of the speed ratio) and by the reproduction notes
(do codefuse's commands agree with our verdicts on the canonical solutions?). Runs untrusted code unconfined:
only for trusted inputs such as the canonical solutions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mft_eval.humaneval_x.commands import needs_crypto
from mft_eval.humaneval_x.languages import LANGUAGES
from mft_eval.humaneval_x.toolchains import DEBIAN_CARGO_REGISTRY, RUST_CRATES, Toolchain

_COUNTER = threading.Lock()


def _run(argv: list[str], cwd: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, cwd=cwd, timeout=timeout, capture_output=True, env=env)
    except subprocess.TimeoutExpired:
        return None


class Baseline:
    """Run sources the codefuse way; ``workdir`` holds the shared Go cache and Rust project."""

    def __init__(self, lang: str, tc: Toolchain, workdir: Path, timeout: float) -> None:
        self.lang, self.tc, self.workdir, self.timeout = lang, tc, Path(workdir), timeout
        self.env = {**os.environ, **tc.env}
        self._n = 0
        if lang == "go":
            shutil.copytree(tc.go_cache, self.workdir / "gocache", dirs_exist_ok=True)
            self.env["GOCACHE"] = str(self.workdir / "gocache")
        if lang == "rust":
            self._rust_project()

    def _rust_project(self) -> None:
        project = self.workdir / "rust"
        (project / "src" / "bin").mkdir(parents=True, exist_ok=True)
        (project / ".cargo").mkdir(exist_ok=True)
        deps = "\n".join(f'{name} = "{version}"' for name, version in RUST_CRATES.items())
        (project / "Cargo.toml").write_text(
            f'[package]\nname = "rust"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n{deps}\n')
        (project / ".cargo" / "config.toml").write_text(
            '[source.crates-io]\nreplace-with = "debian"\n\n'
            f'[source.debian]\ndirectory = "{DEBIAN_CARGO_REGISTRY}"\n\n[net]\noffline = true\n')
        (project / "src" / "bin" / "warm.rs").write_text("fn main() {}\n")
        # the crates are built once, as in a codefuse-evaluation checkout that has run before
        subprocess.run([self.tc.tools["cargo"], "test", "--bin", "warm"], cwd=project, capture_output=True)

    def _name(self) -> str:
        with _COUNTER:
            self._n += 1
            return f"p{self._n}"

    def run(self, source: str, prompt: str) -> tuple[bool, str]:
        """(passed, detail) of one program."""
        lang, timeout = self.lang, self.timeout
        if lang == "rust":
            name = self._name()
            project = self.workdir / "rust"
            (project / "src" / "bin" / f"{name}.rs").write_text(source)
            try:
                check = _run([self.tc.tools["cargo"], "check", "--bin", name, "--message-format", "json"],
                             str(project), timeout, self.env)
                if check is None or check.returncode != 0:
                    return False, "compilation error"
                test = _run([self.tc.tools["cargo"], "test", "--bin", name, "--message-format", "json"],
                            str(project), timeout, self.env)
                return (test is not None and test.returncode == 0), "execution error"
            finally:
                (project / "src" / "bin" / f"{name}.rs").unlink(missing_ok=True)
        tmp = tempfile.mkdtemp(dir=self.workdir)
        try:
            Path(tmp, LANGUAGES[lang].source_file).write_text(source)
            if lang == "cpp":
                argv = ["/usr/bin/g++", "-std=c++11", "test.cpp"] + (["-lcrypto", "-lssl"] if needs_crypto(prompt)
                                                                       else [])
                built = _run(argv, tmp, timeout)
                if built is None or built.returncode != 0:
                    return False, "compilation error"
                ran = _run(["./a.out"], tmp, timeout)
                return (ran is not None and ran.returncode == 0), "run"
            if lang == "java":
                built = _run(["javac", os.path.join(tmp, "Main.java")], tmp, timeout)
                if built is None or built.returncode != 0:
                    return False, "compilation error"
                ran = _run(["java", "-cp", tmp, "Main"], tmp, timeout)
                return (ran is not None and ran.returncode == 0), "run"
            if lang == "js":
                ran = _run(["node", "test.js"], tmp, timeout, self.env)
                return (ran is not None and not ran.stdout and not ran.stderr), "output"
            if lang == "go":
                ran = _run(["go", "test", f"-timeout={int(timeout)}s", "main_test.go"], tmp, timeout, self.env)
                return (ran is not None and ran.returncode == 0), "go test"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"unknown language {lang!r}")

    def run_many(self, sources: Sequence[tuple[str, str]], workers: int) -> list[tuple[bool, str]]:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda sp: self.run(*sp), sources))
