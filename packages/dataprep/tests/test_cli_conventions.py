"""mft-prep as a tool in a log: `--version`, `-h`, flags without `<bool>`, one-line errors (traceback with
--debug or MFT_DEBUG=1), plain progress lines and uncut tables when the output is a pipe, a task that keeps
nothing is an error, and one convention for record locations (`file:line` for JSON Lines, `file[index]` for
arrays and Parquet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mft_dataprep import __version__

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "mft_dataprep" / "sample_data"


def prep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`mft-prep ARGS` in a subprocess, stdout and stderr to pipes (as in a cluster job)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("MFT_DEBUG", "COLUMNS")}
    return subprocess.run([str(Path(sys.executable).parent / "mft-prep"), *args], capture_output=True, text=True,
                          env={**environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("args", [["--version"], ["run", "--version"], ["stats", "--version"],
                                  ["synth", "--version"]])
def test_version(args):
    result = prep(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mft-prep {__version__}"


@pytest.mark.parametrize("args", [["-h"], ["run", "-h"], ["stats", "-h"], ["show", "-h"], ["synth", "-h"]])
def test_short_help_and_flags_without_bool(args):
    result = prep(*args)
    assert result.returncode == 0, result.stderr
    assert "Usage: mft-prep" in result.stdout and "--debug" in result.stdout
    assert "<bool>" not in result.stdout


def test_error_is_one_line_and_debug_shows_traceback(tmp_path):
    missing = tmp_path / "nope.yaml"
    plain = prep("run", str(missing))
    assert plain.returncode == 1
    assert plain.stderr == f"error: {missing}: config file not found\n"
    for result in (prep("run", str(missing), "--debug"), prep("--debug", "run", str(missing)),
                   prep("run", str(missing), env={"MFT_DEBUG": "1"})):
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr and "ConfigError" in result.stderr
    usage = prep("run")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr


def test_piped_run_prints_progress_lines_and_whole_tables(tmp_path):
    long_name = "a-task-name-long-enough-to-be-cut-in-eighty-columns-" + "x" * 30
    config = tmp_path / "prep.yaml"
    config.write_text(f"tasks:\n  - name: {long_name}\n    sources: {SAMPLE / 'raw' / 'codeexercise.jsonl'}\n"
                      "split: {valid_count: 1}\n")
    out = tmp_path / ("an-output-folder-with-a-long-name-" + "y" * 40)
    result = prep("run", str(config), "--output", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"mft-prep: [1/1 sources] reading {long_name}: ")
    assert "codeexercise.jsonl; 0 records in " in lines[0]
    assert lines[-1].startswith("mft-prep: [1/1 sources] 18 records in ") and lines[-1].endswith("/s); writing shards")
    assert long_name in result.stdout and f"wrote {out} in " in result.stdout
    stats = prep("stats", str(out))
    assert stats.returncode == 0, stats.stderr
    assert long_name in stats.stdout and str(out) in stats.stdout and "…" not in stats.stdout


def test_task_that_keeps_nothing_is_an_error(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"broken": \n' + '{"prompt": "p"}\n')
    (tmp_path / "good.jsonl").write_text(json.dumps({"prompt": "What is two plus two?", "response": "4"}) + "\n")
    config = tmp_path / "prep.yaml"
    config.write_text("tasks:\n  - {name: broken, sources: bad.jsonl}\n  - {name: fine, sources: [good.jsonl]}\n"
                      "quality: {enabled: false}\nsplit: {valid_fraction: 0}\n")
    out = tmp_path / "out"
    result = prep("run", str(config), "--output", str(out), "--no-progress")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: task 'broken' kept 0 of 2 records")
    assert "first: bad.jsonl:1: rejected invalid_json (column" in result.stderr
    assert "--allow-empty" in result.stderr
    assert not (out / "manifest.json").exists()
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rejects] == ["bad.jsonl:1", "bad.jsonl:2"]
    allowed = prep("run", str(config), "--output", str(out), "--no-progress", "--allow-empty")
    assert allowed.returncode == 0, allowed.stderr
    assert "task 'broken' kept no record (allowed)" in allowed.stdout
    assert json.loads((out / "manifest.json").read_text())["tasks"]["broken"]["kept"] == 0
    by_key = tmp_path / "by_key.yaml"
    by_key.write_text(config.read_text().replace("sources: bad.jsonl}", "sources: bad.jsonl, allow_empty: true}"))
    assert prep("run", str(by_key), "--output", str(tmp_path / "out2"), "--no-progress").returncode == 0


def test_locations_in_rejects_show_and_stats(tmp_path):
    """JSON Lines: `file:line` (1-based); JSON arrays and Parquet: `file[index]` (0-based)."""
    out = tmp_path / "prepared"
    assert prep("run", str(SAMPLE / "demo.yaml"), "--output", str(out), "--no-progress").returncode == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    for r in rejects:
        if r["source"].endswith((".jsonl", ".jsonl.gz")):
            assert r["where"] == f"{r['source']}:{r['index']}" and r["index"] >= 1
        elif r["source"].endswith((".json", ".json.gz", ".parquet")):
            assert r["where"] == f"{r['source']}[{r['index']}]"
        else:
            assert r["where"] == r["source"]
    assert any(r["where"].startswith("raw/evol.json[") for r in rejects)
    show = prep("show", str(out), "--task", "evol-instruct", "-n", "1")
    assert show.returncode == 0, show.stderr
    header = show.stdout.splitlines()[0]
    assert header.startswith("== evol-instruct-") and "(raw/evol.json[" in header and header.endswith("])")
    jsonl = prep("show", str(out), "--task", "code-exercise", "-n", "1")
    assert "(raw/codeexercise.jsonl:" in jsonl.stdout.splitlines()[0]
    stats = prep("stats", str(out))
    first = {r["category"] + ":" + r["reason"]: r["where"] for r in reversed(rejects)}
    row = next(line for line in stats.stdout.splitlines() if "rejected:invalid_json" in line)
    assert first["rejected:invalid_json"] in row
