"""Build and run commands per language (codefuse-evaluation's ``execution.py``), and the limits each one runs under.

- cpp: ``g++ -std=c++11 test.cpp`` (+ ``-lcrypto -lssl`` when the prompt includes openssl: CPP/162), then
  ``./a.out``; passes when both exit 0.
- java: ``javac Main.java``, then ``java -cp DIR Main``; passes when both exit 0.
- js: ``node test.js``; passes when it exits 0 and prints nothing (console.assert prints, it does not throw:
  codefuse fails any output on stdout or stderr).
- go: ``go test -timeout=Ts main_test.go`` (GOPATH mode, testify from Debian, the warmed build
  cache linked in read-only); passes when it exits 0.
- rust: ``rustc --emit=metadata`` (what ``cargo check --bin`` runs), then ``rustc --test`` (``cargo test --bin``,
  with cargo's test profile: opt-level 0, debug assertions, overflow checks), then the test binary; rand, regex and
  md5 as ``--extern``; passes when all three exit 0.

By default two speed-ups that change no verdict are added (``fast_builds``; ``MFT_EVAL_HUMANEVAL_X_PLAIN=1`` turns
them off): C++ compiles with ``-include`` of codefuse's helper includes, precompiled once (every built file has
those headers anyway; GCC parses the header itself when the PCH does not match), and Java's JVMs run with C1 only
and the serial GC, javac with a class-data archive of its own classes.

rustc is called directly rather than through cargo: one cargo project shared by parallel programs serialises
them on its build-directory lock (codefuse-evaluation's layout), and cargo adds its own start-up to each program.

Address space (RLIMIT_AS) per language, measured with ``prlimit --as`` on problem 0's canonical solution:
g++ builds within 256 MiB; node aborts below 1 GiB ("Failed to reserve virtual memory for CodeRange"); the Go
runtime below 1 GiB ("failed to reserve page summary memory"); the JVM below 4 GiB (it reserves its heap, 1 GiB
of compressed class space and its code cache up front). These are reservations, not use (javac's peak RSS is
85 MB): what a program may really use is bounded by the worker's cgroup (``worker_memory_mb``) where root can make
one. Timeouts are wall-clock seconds for all steps of a program together, compilation included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mft_eval.humaneval_x.languages import LANGUAGES
from mft_eval.humaneval_x.toolchains import JAVA_FAST_FLAGS, JAVA_FAST_FLAGS_JAVAC, Toolchain

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds, every step of one program together
    memory_mb: int  # RLIMIT_AS of each step
    max_processes: int = 512  # RLIMIT_NPROC of the worker's uid (javac and go start dozens of threads)
    max_file_mb: int = 256  # RLIMIT_FSIZE (a Rust test binary with its crates is ~15 MB)
    worker_memory_mb: int = 3072  # the worker's cgroup: resident memory of everything one program starts


LIMITS: dict[str, Limits] = {
    "cpp": Limits(timeout=30.0, memory_mb=2048),
    "java": Limits(timeout=40.0, memory_mb=8192),
    "js": Limits(timeout=15.0, memory_mb=4096),
    "go": Limits(timeout=40.0, memory_mb=4096),
    "rust": Limits(timeout=40.0, memory_mb=4096),
}


@dataclass(frozen=True)
class Plan:
    """What the sandbox does for one program: files to write, trees to copy in, steps to run."""

    files: dict[str, str]
    copy: list[tuple[str, str]]
    steps: list[dict]


def _env(tc: Toolchain, **extra: str) -> dict[str, str]:
    return {"PATH": BASE_PATH, "LANG": "C.UTF-8", **tc.env, **extra}


def needs_crypto(prompt: str) -> bool:
    return "openssl/" in prompt


def fast_builds() -> bool:
    """Speed-ups that change no verdict (C++: the helpers' precompiled header; Java: C1, serial GC and javac's
    class-data archive) are on unless ``MFT_EVAL_HUMANEVAL_X_PLAIN=1`` asks for codefuse's exact commands."""
    return os.environ.get("MFT_EVAL_HUMANEVAL_X_PLAIN", "") in ("", "0")


def plan(lang: str, tc: Toolchain, source: str, prompt: str, timeout: float, fast: bool | None = None) -> Plan:
    """The steps for one program; ``{dir}`` in argv/env is the program's private directory."""
    fast = fast_builds() if fast is None else fast
    name = LANGUAGES[lang].source_file
    files = {name: source}
    if lang == "cpp":
        pch = ["-include", tc.cpp_pch] if fast and tc.cpp_pch else []
        compile_ = [tc.tools["g++"], "-std=c++11", *pch, name] + (["-lcrypto", "-lssl"] if needs_crypto(prompt)
                                                                   else [])
        return Plan(files, [], [{"name": "compile", "argv": compile_, "env": _env(tc)},
                                {"name": "run", "argv": ["{dir}/a.out"], "env": _env(tc)}])
    if lang == "java":
        javac_flags = [*JAVA_FAST_FLAGS_JAVAC] if fast else []
        if fast and tc.java_cds:
            javac_flags.append(f"-J-XX:SharedArchiveFile={tc.java_cds}")
        java_flags = list(JAVA_FAST_FLAGS) if fast else []
        return Plan(files, [], [
            {"name": "compile", "argv": [tc.tools["javac"], *javac_flags, name], "env": _env(tc)},
            {"name": "run", "argv": [tc.tools["java"], *java_flags, "-cp", "{dir}", "Main"], "env": _env(tc)}])
    if lang == "js":
        return Plan(files, [], [{"name": "run", "argv": [tc.tools["node"], name], "env": _env(tc)}])
    if lang == "go":
        seconds = max(1, int(timeout))
        return Plan(files, [(tc.go_cache, "gocache")],
                    [{"name": "test", "argv": [tc.tools["go"], "test", f"-timeout={seconds}s", name],
                      "env": _env(tc, GOCACHE="{dir}/gocache")}])
    if lang == "rust":
        externs: list[str] = []
        for crate, path in sorted(tc.rust_externs.items()):
            externs += ["--extern", f"{crate}={path}"]
        externs += ["-L", f"dependency={tc.rust_deps_dir}", "-C", f"linker={tc.tools['linker']}"]
        common = [tc.tools["rustc"], "--edition", "2021", "--crate-name", "main", name]
        return Plan(files, [], [
            {"name": "check", "argv": [*common, "--crate-type", "bin", "--emit=metadata", "-o", "{dir}/check.rmeta",
                                       *externs], "env": _env(tc)},
            {"name": "compile", "argv": [*common, "--test", "-C", "opt-level=0", "-C", "debug-assertions=on",
                                         "-C", "overflow-checks=on", "-o", "{dir}/main", *externs], "env": _env(tc)},
            {"name": "run", "argv": ["{dir}/main"], "env": _env(tc)},
        ])
    raise ValueError(f"unknown HumanEval-X language {lang!r}")


def passed(lang: str, steps: list[dict], n_planned: int) -> bool:
    """Every planned step ran and exited 0; for JavaScript, nothing was printed either."""
    if len(steps) != n_planned or any(s["code"] != 0 or s["timed_out"] for s in steps):
        return False
    return not (lang == "js" and any(s["printed"] for s in steps))


def describe(lang: str, tc: Toolchain, limits: Limits) -> dict:
    """The commands, flags, limits and toolchain versions of ``lang``, for summary.json."""
    example = plan(lang, tc, "", "#include<openssl/md5.h>" if lang == "cpp" else "", limits.timeout)
    return {
        "language": lang,
        "steps": [{"name": s["name"], "argv": s["argv"], "env": {k: v for k, v in s["env"].items() if k != "PATH"}}
                  for s in example.steps],
        "linked_in": [dst for _src, dst in example.copy],
        "fast_builds": fast_builds(),
        "pass_rule": "every step exits 0" + (" and nothing is printed" if lang == "js" else ""),
        "cpp_crypto_rule": "-lcrypto -lssl when the prompt includes openssl/ (CPP/162)" if lang == "cpp" else None,
        "limits": {"timeout_s": limits.timeout, "address_space_mb": limits.memory_mb,
                   "processes": limits.max_processes, "file_size_mb": limits.max_file_mb,
                   "worker_memory_mb": limits.worker_memory_mb},
        "versions": tc.versions,
        "notes": tc.notes,
    }
