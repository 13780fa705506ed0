"""What a run does with an output_dir that already holds one (run_dir.py), through `plan_start` and the CLI: it says
"starting fresh" or "resuming from step N (DIR)"; a finished run is never retrained silently (--overwrite);
a changed config is listed and refused (--allow-config-change), keys the checkpoint cannot continue with (seq_length)
are refused with one line even with the flag; keys like max_steps may change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mft_trainer.cli import app
from mft_trainer.loop import run_training
from mft_trainer.metrics_log import read_metrics
from mft_trainer.run_dir import RunDirError, config_changes, plan_start
from trainer_testkit import tiny_config
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture()
def preempted(tmp_path: Path, dataset: Path) -> tuple[Path, dict]:
    """A 4-step run stopped after step 2 (checkpoint step-2, no final/), and its config as a YAML file."""
    cfg = tiny_config(tmp_path, dataset, max_steps=4, save_every=2)
    run_training(cfg, progress=False, stop_at_step=2)
    raw = cfg.to_yaml_dict(only_set=True)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def _cfg(raw: dict, **changes):
    from mft_trainer.config import TrainConfig

    data = json.loads(json.dumps(raw))
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return TrainConfig.from_dict(data)


def test_config_changes_lists_dotted_keys() -> None:
    old = {"optimizer": {"lr": 1e-2, "eps": 1e-8}, "seq_length": 256, "logging": {"log_every": 1}}
    new = {"optimizer": {"lr": 1e-3, "eps": 1e-8}, "seq_length": 256, "logging": {"log_every": 5}, "x": 1}
    assert config_changes(old, new) == [("logging.log_every", 1, 5), ("optimizer.lr", 1e-2, 1e-3), ("x", None, 1)]


def test_plan_start_rules(preempted: tuple[Path, dict]) -> None:
    _, raw = preempted
    out = Path(raw["output_dir"])
    step2 = out / "checkpoints" / "step-2"
    assert plan_start(_cfg(raw)).message == f"resuming from step 2 ({step2})"
    assert plan_start(_cfg(raw)).resume_from == step2
    # Safe keys change freely and are listed.
    plan = plan_start(_cfg(raw, max_steps=6, logging__log_every=2))
    assert plan.message == f"resuming from step 2 ({step2}); changed: logging.log_every 1 -> 2; max_steps 4 -> 6"
    with pytest.raises(RunDirError, match="max_steps: 1 is below the step of the checkpoint"):
        plan_start(_cfg(raw, max_steps=1, save_every=1))
    # Training settings: refused unless allowed, and then listed.
    with pytest.raises(RunDirError, match=r"optimizer.lr 0.01 -> 0.001; pass --allow-config-change"):
        plan_start(_cfg(raw, optimizer__lr=1e-3))
    allowed = plan_start(_cfg(raw, optimizer__lr=1e-3), allow_config_change=True)
    assert allowed.resume_from == step2 and allowed.message.endswith("changed: optimizer.lr 0.01 -> 0.001")
    # What the checkpoint cannot continue with: refused even with the flag, naming --overwrite.
    for changes in ({"seq_length": 128}, {"micro_batch_size": 1}, {"peft__method": "lora"}):
        with pytest.raises(RunDirError, match="cannot continue with a changed .* pass --overwrite"):
            plan_start(_cfg(raw, **changes), allow_config_change=True)
    with pytest.raises(RunDirError, match="resume: never, but .* holds checkpoints of an earlier run .*step-2.*"
                                          "--overwrite"):
        plan_start(_cfg(raw, resume="never"))
    fresh = plan_start(_cfg(raw, resume="never"), overwrite=True)
    assert fresh.resume_from is None and fresh.clear and "--overwrite" in fresh.message
    assert plan_start(_cfg(raw, output_dir=str(out.parent / "elsewhere"))).message == (
        f"starting fresh in {out.parent / 'elsewhere'}")


def test_resume_finish_refuse_overwrite_through_the_cli(preempted: tuple[Path, dict]) -> None:
    path, raw = preempted
    out = Path(raw["output_dir"])
    base = ["train", str(path), "--no-progress"]

    changed = runner.invoke(app, [*base, "optimizer.lr=0.001"])
    assert changed.exit_code == 1 and "Traceback" not in changed.output
    assert changed.stderr.count("\n") == 1 and "optimizer.lr 0.01 -> 0.001" in changed.stderr
    assert "--allow-config-change" in changed.stderr
    seq = runner.invoke(app, [*base, "seq_length=128", "--allow-config-change"])
    assert seq.exit_code == 1 and "Traceback" not in seq.output and seq.stderr.count("\n") == 1
    assert "cannot continue with a changed seq_length 256 -> 128" in seq.stderr

    resumed = runner.invoke(app, [*base, "optimizer.lr=0.001", "--allow-config-change"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.splitlines()[0] == (f"resuming from step 2 ({out / 'checkpoints' / 'step-2'}); changed: "
                                              "optimizer.lr 0.01 -> 0.001")
    final = out / "final" / "model.safetensors"
    written = final.stat().st_mtime_ns

    again = runner.invoke(app, base)
    assert again.exit_code == 1 and again.stderr.count("\n") == 1
    assert f"output_dir {out} holds a finished run ({out / 'final'} of step 4); pass --overwrite" in again.stderr
    assert final.stat().st_mtime_ns == written  # nothing retrained, nothing replaced

    over = runner.invoke(app, [*base, "--overwrite"])
    assert over.exit_code == 0, over.output
    assert over.output.splitlines()[0] == f"starting fresh (--overwrite: the earlier run in {out} is replaced)"
    events = [r["event"] for r in read_metrics(out / "metrics.jsonl") if "event" in r]
    assert events == ["started"]  # the earlier run's records went with it
    assert json.loads((out / "final" / "mft_train.json").read_text())["step"] == 4
