"""mft-train CLI through typer's runner (output to a pipe): dry-run prints config/dataset/budget/start and loads no
model; every error is one line `error: ...` naming the key or file, exit 1, the traceback only with --debug or
MFT_DEBUG=1 (bad config, data.path missing or raw, an empty model folder, a task with no records, max_steps below the
warm-up, merge of a full model); -h/--version/flags on every command; inspect; train + merge of a LoRA adapter."""

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
    assert f"starting fresh in {config.parent / 'run'}" in out
    assert not (config.parent / "run").exists()


def _one_line_error(result, *needles: str) -> str:
    """The run failed with exit 1 and printed exactly one line, `error: ...`, holding every needle."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_config_error_is_one_line_naming_the_key(config: Path, monkeypatch) -> None:
    monkeypatch.delenv("MFT_DEBUG", raising=False)
    result = runner.invoke(app, ["train", str(config), "optimizer.lr=abc", "--dry-run"])
    _one_line_error(result, f"{config}: optimizer.lr: Input should be a valid number", "(got 'abc')")
    # --debug (or MFT_DEBUG=1) lets the exception through: typer's runner holds it instead of a printed line.
    for args, env in ((["--debug"], {}), ([], {"MFT_DEBUG": "1"})):
        debug = runner.invoke(app, ["train", str(config), "optimizer.lr=abc", "--dry-run", *args], env=env)
        assert debug.exit_code == 1 and type(debug.exception).__name__ == "ConfigError", debug.output
        assert "error: " not in debug.stderr


def test_max_steps_below_the_warmup_names_both_keys(config: Path) -> None:
    result = runner.invoke(app, ["train", str(config), "schedule.warmup_steps=10", "max_steps=5", "--dry-run"])
    _one_line_error(result, "schedule.warmup_steps (10) must be <= max_steps (5)", "schedule.warmup_steps=5")


@pytest.mark.parametrize("dry_run", [True, False])
def test_data_path_missing_or_raw_is_one_line(config: Path, tmp_path: Path, dry_run: bool) -> None:
    flag = ["--dry-run"] if dry_run else []
    missing = runner.invoke(app, ["train", str(config), f"data.path={tmp_path / 'nowhere'}", *flag])
    _one_line_error(missing, f"data.path: {tmp_path / 'nowhere'} does not exist", "mft-prep")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "data.jsonl").write_text('{"instruction": "hi", "output": "hello"}\n')
    result = runner.invoke(app, ["train", str(config), f"data.path={raw}", f"output_dir={tmp_path / 'run'}", *flag])
    _one_line_error(result, f"data.path: {raw / 'manifest.json'} not found", "mft-prep run")
    assert not (tmp_path / "run").exists()


def test_empty_model_folder_is_caught_by_the_dry_run(config: Path, tmp_path: Path) -> None:
    empty = tmp_path / "model"
    empty.mkdir()
    raw = yaml.safe_load(config.read_text())
    raw["model"] = {"path": str(empty)}
    raw["peft"] = {"method": "full"}
    raw["data"]["path"] = str(config.parent / "prepared")
    path = tmp_path / "empty-model.yaml"
    path.write_text(yaml.safe_dump(raw))
    _one_line_error(runner.invoke(app, ["train", str(path), "--dry-run"]), f"model.path: {empty} is an empty folder")
    (empty / "config.json").write_text("{}")
    _one_line_error(runner.invoke(app, ["train", str(path), "--dry-run"]),
                    f"model.path: {empty} has config.json but no weights")


def test_a_task_with_no_records_is_an_error_unless_allowed(config: Path, tmp_path: Path) -> None:
    data = write_prepared_dataset(tmp_path / "prepared")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["tasks"]["broken"] = {"kind": "chat", "read": 5, "kept": 0, "rejected": 5,
                                   "splits": {"train": {"records": 0, "shards": []}}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["train", str(config), f"data.path={data}", "--dry-run"])
    _one_line_error(result, "names task(s) with no train records: broken", "data.allow_empty_tasks=true")
    allowed = runner.invoke(app, ["train", str(config), f"data.path={data}", "data.allow_empty_tasks=true",
                                  "--dry-run"])
    assert allowed.exit_code == 0, allowed.output
    assert "tasks with no records, left out (data.allow_empty_tasks): broken" in allowed.output


@pytest.mark.parametrize("command", [[], ["train"], ["inspect"], ["merge"]])
def test_version_and_short_help_on_every_command(command: list[str]) -> None:
    from mft_trainer import __version__

    version = runner.invoke(app, [*command, "--version"])
    assert version.exit_code == 0 and version.output == f"mft-train {__version__}\n", version.output
    short, long = runner.invoke(app, [*command, "-h"]), runner.invoke(app, [*command, "--help"])
    assert short.exit_code == 0 and short.output == long.output
    assert "<bool>" not in short.output and "--debug" in short.output and "--install-completion" not in short.output


def test_help_shows_flags_and_choices() -> None:
    train = runner.invoke(app, ["train", "-h"], terminal_width=200).output
    for flag in ("--dry-run", "--progress", "--no-progress", "--overwrite", "--allow-config-change"):
        assert flag in train
    merge = runner.invoke(app, ["merge", "-h"], terminal_width=200).output
    assert "<auto|bf16|fp16|fp32>" in merge and "[default: auto]" in merge
    bad = runner.invoke(app, ["merge", "--adapter", "a", "--output", "b", "--dtype", "int8"])
    assert bad.exit_code == 2 and "int8" in bad.output  # a usage error: click's exit status


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
    again = runner.invoke(app, ["merge", "--adapter", str(merged), "--output", str(tmp_path / "again")])
    _one_line_error(again, f"adapter: {merged / 'adapter_config.json'} not found", "holds a full model")


def test_tiny_example_names_the_demo_data_and_writes_outside_the_source_tree(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[3]
    example = repo / "packages" / "trainer" / "examples" / "tiny-cpu.yaml"
    header = example.read_text().split("\nmodel:")[0]
    assert "data.path=work/demo/prep" in header
    demo = yaml.safe_load((repo / "pipelines" / "demo-cpu.yaml").read_text())
    assert demo["workdir"] == "../work/demo" and any(s["name"] == "prep" for s in demo["stages"])  # work/demo/prep
    from mft_trainer.config import TrainConfig

    cfg = TrainConfig.from_yaml(example, [f"data.path={tmp_path}"])
    assert cfg.output_dir == Path.home() / "mft-runs" / "tiny-cpu"
    assert repo not in cfg.output_dir.parents
