"""mft-eval as a tool in a log, run as a subprocess with its output to pipes: `--version`, `-h`, choices and flags in
help, one-line errors (traceback with --debug or MFT_DEBUG=1), progress lines when piped, unreadable samples lines
reported and skipped (or fatal with --strict), partial scores labelled as such, k defaulting to what n allows, the
device defaulting to CUDA when present, and no foreign noise when evaluating an adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mft_eval import __version__

MFT_EVAL = str(Path(sys.executable).parent / "mft-eval")


def mft_eval(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("MFT_DEBUG", "COLUMNS")}
    return subprocess.run([MFT_EVAL, *args], capture_output=True, text=True, env={**environ, **(env or {})},
                          timeout=600)


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD_0 = json.dumps({"task_id": "Held/0", "completion": "    return a + b\n"})
GOOD_1 = json.dumps({"task_id": "Held/1", "completion": "    return [v * 2 for v in values]\n"})
BAD_CONTROL = '{"task_id": "Held/1", "completion": "    return\x01 [v * 2 for v in values]\n"}'.replace("\n", "\\n")


@pytest.mark.parametrize("args", [["--version"], ["run", "--version"], ["score", "--version"],
                                  ["report", "--version"]])
def test_version(args):
    result = mft_eval(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mft-eval {__version__}"


def test_help_lists_choices_and_flags():
    for args in (["-h"], ["score", "-h"], ["report", "-h"]):
        result = mft_eval(*args)
        assert result.returncode == 0 and "<bool>" not in result.stdout and "--debug" in result.stdout
    run = mft_eval("run", "-h", env={"COLUMNS": "200"})
    assert run.returncode == 0
    for choices in ("<base|chat|mftcoder>", "<hf|vllm>", "<auto|float32|bfloat16|float16>", "<none|codefuse>",
                    "humaneval-x:LANG (LANG: cpp, java, js, go, rust)", "auto (cuda when present, else cpu)"):
        assert choices in run.stdout, choices
    assert "<bool>" not in run.stdout
    score = mft_eval("score", "-h", env={"COLUMNS": "200"})
    assert "--strict" in score.stdout and "unreadable samples line" in score.stdout


def test_model_errors_are_one_line(tmp_path, held_out_file):
    missing = tmp_path / "nope"
    result = mft_eval("run", "--model", str(missing), "--output", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr == f"error: model {missing}: not found (expected a HF checkpoint, a PEFT adapter or an " \
                            "mft-train run directory)\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = mft_eval("run", "--model", str(empty), "--output", str(tmp_path / "o"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {empty}: no config.json or adapter_config.json here or in ")
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text("{}")
    (no_tokenizer / "model.safetensors").write_bytes(b"")
    result = mft_eval("run", "--model", str(no_tokenizer), "--output", str(tmp_path / "o"))
    assert result.returncode == 1 and "no tokenizer (tokenizer.json, " in result.stderr
    for debug in (mft_eval("run", "--model", str(empty), "--output", str(tmp_path / "o"), "--debug"),
                  mft_eval("run", "--model", str(empty), "--output", str(tmp_path / "o"), env={"MFT_DEBUG": "1"})):
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_unreadable_line_is_reported_and_skipped(tmp_path, held_out_file):
    samples = write_jsonl(tmp_path / "samples.jsonl", [GOOD_0, BAD_CONTROL, GOOD_1, "[1, 2]"])
    out = tmp_path / "scored"
    result = mft_eval("score", "--samples", str(samples), "--benchmark", str(held_out_file), "--output", str(out))
    assert result.returncode == 0, result.stderr
    expected = f"{samples}:2: not valid JSON: Invalid control character at column "
    assert "unreadable samples lines skipped: 2" in result.stdout and expected in result.stdout
    assert f"{samples}:4: expected a JSON object, got list" in result.stdout
    assert "partial: 2 unreadable samples lines skipped" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unreadable_lines"]["count"] == 2 and summary["unreadable_lines"]["first"][0].startswith(expected)
    assert summary["partial"] is True and summary["problems_scored"] == summary["problems_total"] == 2
    assert summary["pass_at_k"] == {"1": 1.0} and summary["num_samples"] == 2
    report = (out / "report.md").read_text()
    assert "## Unreadable samples lines, skipped (2)" in report and expected in report
    strict = mft_eval("score", "--samples", str(samples), "--benchmark", str(held_out_file), "--output",
                      str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 1 and strict.stderr.startswith(f"error: {expected}")
    assert strict.stderr.count("\n") == 1


def test_partial_scores_are_labelled(tmp_path, held_out_file):
    samples = write_jsonl(tmp_path / "one.jsonl", [GOOD_0])
    out = tmp_path / "one"
    result = mft_eval("score", "--samples", str(samples), "--benchmark", str(held_out_file), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "partial: problems scored 1 of 2; pass@k is over these 1 problems, not held_out.jsonl's" in result.stdout
    assert "pass@1 (1 of 2 problems)" in result.stdout and "skipped" not in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["partial"], summary["problems_scored"], summary["problems_total"]) == (True, 1, 2)
    assert summary["partial_reasons"] == ["problems scored 1 of 2"] and summary["limit"] is None
    report = (out / "report.md").read_text()
    assert "**Partial: problems scored 1 of 2;" in report and "| pass@1 (1 of 2 problems) | 1.0000 |" in report
    both = write_jsonl(tmp_path / "both.jsonl", [GOOD_0, GOOD_1])
    limited = mft_eval("score", "--samples", str(both), "--benchmark", str(held_out_file), "--output",
                       str(tmp_path / "limited"), "--limit", "1")
    assert limited.returncode == 0, limited.stderr
    summary = json.loads((tmp_path / "limited" / "summary.json").read_text())
    assert summary["limit"] == 1 and summary["partial_reasons"] == ["problems scored 1 of 2 (--limit 1)"]
    assert summary["unreadable_lines"]["count"] == 0  # the line past the limit is left out, not unreadable
    assert "| limit | 1 (the first 1 problems) |" in (tmp_path / "limited" / "report.md").read_text()
    whole = mft_eval("score", "--samples", str(both), "--benchmark", str(held_out_file), "--output",
                     str(tmp_path / "whole"))
    assert "partial:" not in whole.stdout and "problems)" not in whole.stdout and "pass@1 " in whole.stdout
    assert json.loads((tmp_path / "whole" / "summary.json").read_text())["partial"] is False


def test_run_piped_shows_progress_default_k_and_no_noise(tiny_checkpoint, held_out_file, tmp_path):
    """An adapter evaluation, stdout and stderr to pipes: plain progress lines, pass@1 only (n = 1), the device
    CPU here (no CUDA), and no bitsandbytes, DeepSpeed or transformers noise."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint), dtype="float32")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    out = tmp_path / "run"
    result = mft_eval("run", "--model", str(adapter), "--output", str(out), "--benchmark", str(held_out_file),
                      "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("mft-eval: generating 2/2 samples (100%), ") and lines[0].endswith("s")
    assert lines[1].startswith("mft-eval: executing 2/2 programs (100%), ") and "done in" in lines[1]
    assert len(lines) == 2, result.stderr  # nothing else: no kernels warning, no loading bar, no FutureWarning
    assert "skipped" not in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["pass_at_k"]) == ["1"] and summary["skipped_k"] == []
    assert summary["settings"]["device"] == "cpu"


def test_device_auto_picks_cuda_when_present(monkeypatch):
    import torch
    from mft_eval.generate import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda:1") == "cuda:1"


def test_cli_sets_passive_openmp_unless_set():
    code = "import os, mft_eval.cli; print(os.environ['OMP_WAIT_POLICY'])"
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    unset = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ)
    assert unset.stdout.strip() == "PASSIVE"
    user = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**environ, "OMP_WAIT_POLICY": "ACTIVE"})
    assert user.stdout.strip() == "ACTIVE"
