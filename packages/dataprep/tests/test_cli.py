"""The `mft-prep` commands (run, stats, show), config errors on the command line, and a real kill mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mft_dataprep.api import PrepConfig, run_with_result
from mft_dataprep.cli import app
from mft_dataprep.manifest import MANIFEST
from typer.testing import CliRunner

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "mft_dataprep" / "sample_data"
runner = CliRunner()


def test_run_stats_show(tmp_path):
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["run", str(SAMPLE / "demo.yaml"), "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "mft-prep summary" in result.output and "code-exercise" in result.output
    again = runner.invoke(app, ["run", str(SAMPLE / "demo.yaml"), "--output", str(out), "--no-progress"])
    assert again.exit_code == 0 and "up to date" in again.output
    stats = runner.invoke(app, ["stats", str(out)])
    assert stats.exit_code == 0, stats.output
    assert "totals: read 66 = kept 37 + rejected 26 + duplicate 2 + contaminated 1" in stats.output
    assert "rejected:invalid_utf8" in stats.output
    show = runner.invoke(app, ["show", str(out), "--task", "code-exercise", "-n", "2"])
    assert show.exit_code == 0, show.output
    assert show.output.count("code-exercise-") == 2 and "assistant" in show.output


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - {name: t, sources: [nothing.jsonl], bogus: 1}\n")
    result = runner.invoke(app, ["run", str(bad), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "tasks.0.bogus: unknown key" in result.output and "Traceback" not in result.output
    missing = runner.invoke(app, ["stats", str(tmp_path)])
    assert missing.exit_code == 1 and "no manifest.json" in missing.output
    demo = tmp_path / "demo"
    runner.invoke(app, ["run", str(SAMPLE / "demo.yaml"), "--output", str(demo), "--no-progress"])
    unknown = runner.invoke(app, ["show", str(demo), "--task", "nope"])
    assert unknown.exit_code == 1 and "no task 'nope'" in unknown.output


def test_kill_during_run_then_rerun_completes(tmp_path):
    """SIGKILL a real `mft-prep run` once it is writing, then rerun: same bytes as an uninterrupted run."""
    rows = [{"prompt": f"Question number {i} about topic {i % 97} and detail {i * 7}",
             "response": f"Answer {i}: " + " ".join(f"token{(i * j) % 1013}" for j in range(40))}
            for i in range(12000)]
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "prep.yaml").write_text(
        "tasks:\n  - {name: t, sources: [raw.jsonl]}\nquality: {enabled: false}\ndedup: {near: false}\n"
        "rows_per_shard: 1000\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mft_dataprep.cli", "run", str(tmp_path / "prep.yaml"),
                             "--output", str(out), "--no-progress"], stdout=subprocess.DEVNULL)
    spool = out / ".spool" / "t.arrows"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if spool.exists() and spool.stat().st_size > 0:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; make the input larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST).exists()
    config = PrepConfig.from_yaml(tmp_path / "prep.yaml")
    resumed = run_with_result(config, out, progress=False)
    assert not resumed.skipped and resumed.manifest["totals"]["kept"] == 12000
    clean = run_with_result(config, tmp_path / "clean", progress=False)
    assert resumed.manifest == clean.manifest
    for shard in clean.manifest["shards"]:
        assert (out / shard["path"]).read_bytes() == (tmp_path / "clean" / shard["path"]).read_bytes()
