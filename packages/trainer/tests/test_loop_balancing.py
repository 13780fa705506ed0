"""The balancing controller inside the real training loop: CoBa weights move and are logged, a resumed CoBa run equals
the uninterrupted one (task weights, losses and model weights bit for bit on CPU), early stopping stops and keeps the
best model, per-task validation lands in metrics.jsonl and mft_train.json, and the one validation cadence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mft_trainer import checkpoint as ckpt
from mft_trainer.config import ConfigError, TrainConfig
from mft_trainer.loop import run_training
from mft_trainer.metrics_log import read_metrics
from safetensors.torch import load_file
from trainer_testkit import tiny_config, write_prepared_dataset

TASKS = ("chat-c", "code-a", "code-b")
COBA = {"mode": "coba", "coba": {"warmup": 2, "history": 4, "tau": 5.0, "update_every": 1},
        "validation": {"slice": "separate", "slice_size": 2}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_prepared_dataset(tmp_path_factory.mktemp("prepared") / "ds", valid_per_task=8)


def _train_records(out: Path) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if "lr" in r]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_coba_weights_move_and_everything_is_logged(tmp_path: Path, dataset: Path) -> None:
    cfg = tiny_config(tmp_path, dataset, max_steps=8, eval_every=4, loss=COBA)
    final = run_training(cfg, progress=False)
    records = _train_records(cfg.output_dir)
    assert [r["step"] for r in records] == list(range(1, 9))
    for r in records:
        assert r["balancer_seconds"] > 0
        assert sum(r[f"weight/{t}"] for t in TASKS) == pytest.approx(1.0)
        assert all(f"slice_loss/{t}" in r for t in TASKS)
        assert any(f"train_loss/{t}" in r for t in TASKS)
    # Uniform through the warm-up, then CoBa moves them (weights logged are those the step trained with).
    assert all(r[f"weight/{t}"] == pytest.approx(1 / 3) for r in records[:2] for t in TASKS)
    moved = max(abs(records[-1][f"weight/{t}"] - 1 / 3) for t in TASKS)
    assert moved > 1e-3, f"CoBa weights did not move: {[records[-1][f'weight/{t}'] for t in TASKS]}"
    validated = [r for r in records if "valid_loss" in r]
    assert [r["step"] for r in validated] == [4, 8]
    assert all(isinstance(r[f"valid_loss/{t}"], float) for r in validated for t in TASKS)

    record = json.loads((final / "mft_train.json").read_text())
    assert record["loss_mode"] == "coba" and record["step"] == 8 and record["stopped_early"] is False
    assert record["valid_loss_per_task"] == {t: validated[-1][f"valid_loss/{t}"] for t in TASKS}
    assert set(record["task_summary"]) == set(TASKS)
    assert all(record["task_summary"][t]["tokens_seen"] > 0 for t in TASKS)
    assert record["task_summary"]["code-a"]["final_weight"] == pytest.approx(records[-1]["weight/code-a"], abs=0.5)
    for png in ("valid_loss_per_task.png", "task_weights.png"):
        assert (cfg.output_dir / png).stat().st_size > 1000, png
    best = json.loads((cfg.output_dir / "best" / "mft_train.json").read_text())
    assert best["step"] == record["valid_metric"]["best_step"]


def test_self_paced_weights_move_after_its_history(tmp_path: Path, dataset: Path) -> None:
    loss = {"mode": "self_paced", "self_paced": {"history": 3, "scale": 50.0},
            "validation": {"slice": "valid", "slice_size": 2}}
    cfg = tiny_config(tmp_path, dataset, max_steps=5, loss=loss)
    final = run_training(cfg, progress=False)
    records = _train_records(cfg.output_dir)
    # Step 0 and steps 1, 2 fill the 3-point window; the weights a step trains with are logged with it.
    assert all(r[f"weight/{t}"] == pytest.approx(1 / 3) for r in records[:2] for t in TASKS)
    assert all(sum(r[f"weight/{t}"] for t in TASKS) == pytest.approx(1.0) for r in records)
    assert max(abs(records[-1][f"weight/{t}"] - 1 / 3) for t in TASKS) > 1e-3
    record = json.loads((final / "mft_train.json").read_text())
    assert record["loss_mode"] == "self_paced" and set(record["valid_loss_per_task"]) == set(TASKS)


def test_coba_resume_equals_uninterrupted(tmp_path: Path, dataset: Path) -> None:
    common = {"max_steps": 6, "save_every": 2, "eval_every": 3, "loss": COBA, "schedule__warmup_steps": 2}
    straight = tiny_config(tmp_path / "a", dataset, **common)
    final_a = run_training(straight, progress=False)

    resumed = tiny_config(tmp_path / "b", dataset, **common)
    run_training(resumed, progress=False, stop_at_step=4)  # preempted: checkpoint step-4, no final model
    assert [s for s, _ in ckpt.complete_checkpoints(resumed.output_dir)] == [2, 4]
    meta = ckpt.read_meta(ckpt.checkpoint_dir(resumed.output_dir, 4))
    # steps 0..4 in the slope window (history 4 keeps the last 4); CoBa acted at steps 3 and 4 (warm-up 2)
    assert meta["balancer_state"]["mode"] == "coba" and meta["balancer_state"]["balancer"]["steps"] == [1, 2, 3, 4]
    final_b = run_training(resumed, progress=False)

    keys = ["step", "loss", "lr", *(f"{p}/{t}" for p in ("weight", "train_loss", "slice_loss", "valid_loss")
                                    for t in TASKS), "valid_loss"]
    a = [{k: r.get(k) for k in keys} for r in _train_records(straight.output_dir)]
    b = [{k: r.get(k) for k in keys} for r in _train_records(resumed.output_dir)]
    assert a == b  # exact floats: losses, task weights and validation losses
    assert any(r["weight/code-a"] != pytest.approx(1 / 3) for r in a)
    wa, wb = _weights(final_a), _weights(final_b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[n], wb[n]) for n in wa)
    ja, jb = (json.loads((f / "mft_train.json").read_text()) for f in (final_a, final_b))
    assert ja["valid_loss_per_task"] == jb["valid_loss_per_task"]
    assert ja["task_summary"] == jb["task_summary"]  # tokens seen carried over the resume


def test_early_stopping_stops_and_keeps_the_best_model(tmp_path: Path, dataset: Path) -> None:
    # min_delta larger than any change: the first validation is the best, the second exhausts patience 1.
    loss = {"mode": "task", "early_stopping": {"metric": "total", "patience": 1, "min_delta": 100.0}}
    cfg = tiny_config(tmp_path, dataset, max_steps=20, eval_every=2, save_every=2, keep_last=5, loss=loss)
    final = run_training(cfg, progress=False)
    record = json.loads((final / "mft_train.json").read_text())
    assert record["stopped_early"] is True and record["step"] == 4
    assert record["valid_metric"]["best_step"] == 2
    assert set(record["valid_loss_per_task"]) == set(TASKS)
    assert all(isinstance(v, float) for v in record["valid_loss_per_task"].values())
    events = [r for r in read_metrics(cfg.output_dir / "metrics.jsonl") if r.get("event") == "early_stop"]
    assert len(events) == 1 and events[0]["step"] == 4 and events[0]["best_step"] == 2
    assert max(r["step"] for r in _train_records(cfg.output_dir)) == 4
    # best/ holds the weights of step 2 (the same as that step's checkpoint), not the final (step 4) ones.
    best_dir = cfg.output_dir / "best"
    assert json.loads((best_dir / "mft_train.json").read_text())["step"] == 2
    best, at_2 = _weights(best_dir), _weights(ckpt.checkpoint_dir(cfg.output_dir, 2) / "model")
    assert all(torch.equal(best[n], at_2[n]) for n in at_2)
    last = _weights(final)
    assert any(not torch.equal(best[n], last[n]) for n in last)


def test_one_spelling_per_setting(tmp_path: Path, dataset: Path) -> None:
    base = {"model": {"init": {"architecture": "llama"}, "tokenizer": str(tmp_path)}, "data": {"path": str(dataset)}, "output_dir": str(tmp_path)}
    assert TrainConfig.from_dict({**base, "eval_every": 7}).eval_every == 7
    assert TrainConfig.from_dict(base).eval_every == 0  # default: validation only at the end
    with pytest.raises(ValueError, match=r"loss.validation.every is not a key: the setting is `eval_every`"):
        TrainConfig.from_dict({**base, "loss": {"validation": {"every": 7}}})
    with pytest.raises(ValueError, match="early_stopping.patience is set but eval_every is 0"):
        TrainConfig.from_dict({**base, "loss": {"early_stopping": {"patience": 2}}})
    assert TrainConfig.from_dict({**base, "mode": "pretrain"}).mode == "pretrain"
    with pytest.raises(ValueError, match=r"data.mode is not a key: the setting is `mode`"):
        TrainConfig.from_dict({**base, "data": {"path": str(dataset), "mode": "pretrain"}})
    yaml_path = tmp_path / "train.yaml"
    yaml_path.write_text(json.dumps({**base, "eval_every": 5}))
    with pytest.raises(ConfigError, match="loss.validation.every is not a key"):
        TrainConfig.from_yaml(yaml_path, ["loss.validation.every=7"])
