"""mft-train CLI: dry-run prints config/dataset/budget and loads no model; errors exit 2 naming the key; inspect;
train + merge of a LoRA adapter through the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mft_trainer.cli import app
from trainer_testkit import TINY_INIT, tiny_tokenizer_dir, write_prepared_dataset
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_prepared_dataset(root / "prepared")
    raw = {
        "model": {"init": TINY_INIT, "tokenizer": str(tiny_tokenizer_dir()), "dtype": "fp32"},
        "peft": {"method": "lora", "r": 4},
        "data": {"path": "prepared", "num_workers": 0, "cache_dir": "cache"},
        "output_dir": "run",
        "max_steps": 2,
        "seq_length": 256,
        "micro_batch_size": 2,
        "grad_accum": 2,
        "logging": {"tensorboard": False},
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_dry_run_prints_config_dataset_and_budget(config: Path, monkeypatch) -> None:
    from mft_trainer.model import build

    def no_model(*args, **kwargs):
        raise AssertionError("--dry-run must not build a model")

    monkeypatch.setattr(build, "build_model", no_model)
    result = runner.invoke(app, ["train", str(config), "seq_length=128", "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "seq_length: 128" in out and str(config.parent / "prepared") in out  # resolved, overridden
    for task in ("code-a", "code-b", "chat-c"):
        assert task in out
    assert '"token_slots_per_step": 512' in out and '"token_slots_total": 1024' in out  # 4 rows x 128 x 2 steps
    assert not (config.parent / "run").exists()


def test_config_error_exits_2_naming_the_key(config: Path) -> None:
    result = runner.invoke(app, ["train", str(config), "optimizer.lr=abc", "--dry-run"])
    assert result.exit_code == 2
    assert "optimizer.lr" in result.output


def test_inspect_marks_supervised_tokens(config: Path) -> None:
    result = runner.invoke(app, ["inspect", str(config), "--task", "code-a", "-n", "1", "--plain"])
    assert result.exit_code == 0, result.output
    assert "[[" in result.output and "]]" in result.output
    assert "pad" in result.output


def test_train_then_merge_adapter(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), f"output_dir={out}", "--no-progress"])
    assert result.exit_code == 0, result.output
    final = out / "final"
    assert (final / "adapter_config.json").is_file()
    record = json.loads((final / "mft_train.json").read_text())
    assert record["step"] == 2 and record["config"]["peft"]["method"] == "lora"
    merged = tmp_path / "merged"
    result = runner.invoke(app, ["merge", "--adapter", str(final), "--output", str(merged), "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    bad = runner.invoke(app, ["merge", "--adapter", str(final), "--output", str(merged), "--dtype", "fp16"])
    assert bad.exit_code == 2
