"""`mft` as a tool in a log, run as a subprocess with its output to pipes: `--version`, `-h`, flags without
`<bool>`, `running` for a stage that never ran, `--dry-run` reporting every invalid stage in the tools' wording
(an empty model folder included), `sources:` as one string, stage environments (OMP_WAIT_POLICY=PASSIVE unless set,
MFT_DEBUG with --debug), a failed stage's one-line error, and `mft status` paths left whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mftcoder import __version__

HERE = Path(__file__).parent
MFT = str(Path(sys.executable).parent / "mft")


def mft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("MFT_DEBUG", "COLUMNS", "OMP_WAIT_POLICY")}
    environ["PYTHONPATH"] = str(HERE)  # stages import tests/runner_steps.py
    return subprocess.run([MFT, *args], capture_output=True, text=True, env={**environ, **(env or {})}, timeout=600)


def pipeline(tmp: Path, stages: list[dict], workdir: str = "work") -> Path:
    path = tmp / "pipe.yaml"
    path.write_text(yaml.safe_dump({"name": "conventions", "workdir": workdir, "stages": stages}))
    return path


def python_stage(name: str, function: str, **args) -> dict:
    return {"name": name, "tool": "python", "config": {"callable": f"runner_steps:{function}", "args": args}}


@pytest.mark.parametrize("args", [["--version"], ["run", "--version"], ["status", "--version"]])
def test_version(args):
    result = mft(*args)
    assert result.returncode == 0 and result.stdout.strip() == f"mft {__version__}"


@pytest.mark.parametrize("args", [["-h"], ["run", "-h"], ["status", "-h"]])
def test_short_help_without_bool(args):
    result = mft(*args)
    assert result.returncode == 0 and "Usage: mft" in result.stdout and "--debug" in result.stdout
    assert "<bool>" not in result.stdout and "--install-completion" not in result.stdout


def test_dry_run_reports_every_invalid_stage(tmp_path):
    (tmp_path / "raw.jsonl").write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    empty_model = tmp_path / "model"
    empty_model.mkdir()
    stages = [
        {"name": "prep", "tool": "prep", "config": {"tasks": [{"name": "t", "sources": "raw.jsonl"}]}},
        {"name": "prep-bad", "tool": "prep", "config": {"tasks": [{"name": "t", "sources": "raw.jsonl"}],
                                                        "bogus": 1}},
        {"name": "score", "tool": "eval", "config": {"model": str(empty_model), "benchmark": "humaneval"}},
        python_stage("ok", "copy_upper", source="${pipeline_dir}/raw.jsonl", counter="ok"),
        {"name": "py-bad", "tool": "python", "config": {"callable": "no_colon"}},
    ]
    result = mft("run", "--dry-run", str(pipeline(tmp_path, stages)))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "[1/5] prep (prep): config valid; would run"  # sources: one string
    assert lines[1].startswith("[2/5] prep-bad (prep): invalid: prep: ") and "invalid config; bogus: unknown key" in lines[1]
    assert lines[2].startswith(f"[3/5] score (eval): invalid: eval: key 'config.model': {empty_model}: no config.json")
    assert lines[3] == "[4/5] ok (python): config valid; would run"
    assert lines[4].startswith("[5/5] py-bad (python): invalid: python: key 'config.callable': expected")
    assert "Extra inputs" not in result.stdout and "config valid" not in lines[2]
    assert result.stderr == f"error: {tmp_path / 'pipe.yaml'}: 3 of 5 stages invalid (prep-bad, score, py-bad); " \
                            "each is named above\n"


def test_run_says_running_and_sets_the_stage_environment(tmp_path):
    names = ["OMP_WAIT_POLICY", "MFT_DEBUG"]
    path = pipeline(tmp_path, [python_stage("environ", "record_env", names=names)])
    result = mft("run", str(path))
    assert result.returncode == 0, result.stderr
    assert "[1/1] environ (python): running\n" in result.stdout and "not run" not in result.stdout
    recorded = json.loads((tmp_path / "work" / "environ" / "env.json").read_text())
    assert recorded == {"OMP_WAIT_POLICY": "PASSIVE", "MFT_DEBUG": None}
    forced = mft("run", str(path), "--force", "--debug", env={"OMP_WAIT_POLICY": "ACTIVE"})
    assert "[1/1] environ (python): running (forced)" in forced.stdout
    recorded = json.loads((tmp_path / "work" / "environ" / "env.json").read_text())
    assert recorded == {"OMP_WAIT_POLICY": "ACTIVE", "MFT_DEBUG": "1"}


def test_failed_stage_is_one_line_and_debug_keeps_the_traceback(tmp_path):
    (tmp_path / "in.txt").write_text("abc")
    stages = [python_stage("upper", "copy_upper", source="${pipeline_dir}/in.txt", counter="u"),
              python_stage("measure", "measure", data="${upper.output}", counter="m", fail=True)]
    path = pipeline(tmp_path, stages)
    result = mft("run", str(path), env={"MFT_TEST_COUNTERS": str(tmp_path)})
    assert result.returncode == 1
    log = tmp_path / "work" / "logs" / "measure.log"
    assert result.stderr == (f"error: stage 'measure' failed: exit status 1: RuntimeError: asked to fail (--debug "
                             f"shows the traceback); see its log {log}\n")
    assert "Traceback" not in log.read_text() and "error: RuntimeError: asked to fail" in log.read_text()
    debug = mft("run", str(path), "--debug", env={"MFT_TEST_COUNTERS": str(tmp_path)})
    assert debug.returncode == 1 and "Traceback (most recent call last)" in log.read_text()


def test_status_piped_keeps_paths_whole(tmp_path):
    workdir = "a-work-folder-with-a-name-long-enough-to-be-cut-at-eighty-columns-" + "z" * 40
    path = pipeline(tmp_path, [python_stage("environ", "record_env", names=[])], workdir=workdir)
    assert mft("run", str(path)).returncode == 0
    status = mft("status", str(path))
    assert status.returncode == 0, status.stderr
    assert str(tmp_path / workdir) in status.stdout and str(tmp_path / workdir / "environ") in status.stdout
    assert "…" not in status.stdout


def test_partial_eval_metrics_are_labelled(tmp_path):
    from mftcoder.tools import get_tool

    metrics = get_tool("eval").metrics
    (tmp_path / "summary.json").write_text(json.dumps({"pass_at_k": {"1": 0.5}, "partial": True,
                                                        "problems_scored": 3, "problems_total": 164}))
    assert metrics(tmp_path) == {"pass@1 (3/164 problems)": 0.5}
    (tmp_path / "summary.json").write_text(json.dumps({"pass_at_k": {"1": 0.5}, "partial": False}))
    assert metrics(tmp_path) == {"pass@1": 0.5}
