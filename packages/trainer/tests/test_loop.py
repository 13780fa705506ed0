"""The training loop: gradient accumulation invariance (4x1 vs 1x4) and a tiny end-to-end run whose loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mft_trainer.config import TrainConfig
from mft_trainer.data import stream as data_mod
from mft_trainer.distributed import DistEnv, wrap_model
from mft_trainer.loop import forward_backward, run_training
from mft_trainer.loss.step import StepLoss
from mft_trainer.metrics_log import read_metrics
from mft_trainer.model import build
from trainer_testkit import tiny_config


def _grads_for(cfg: TrainConfig, micro: int, accum: int, mode: str) -> tuple[float, dict[str, torch.Tensor]]:
    tokenizer = build.load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = build.build_model(cfg.model, cfg.peft, vocab_size=len(tokenizer))
    env = DistEnv("none", 0, 1, 0, torch.device("cpu"))
    backend = wrap_model(model, cfg, env)
    stream = data_mod.build_train_stream(
        cfg.data, cfg.template, tokenizer, seq_length=cfg.seq_length, packing=cfg.packing, micro_batch_size=micro,
        grad_accum=accum, rank=0, world_size=1, seed=cfg.seed,
    )
    step_loss = StepLoss(mode, 3)
    forward_backward(backend, step_loss, stream.next_step(), "sdpa", 1)
    result = step_loss.end_step()
    return result.loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("mode", ["token", "task"])
def test_grad_accumulation_4x1_equals_1x4(tmp_path: Path, dataset: Path, packing: bool, mode: str) -> None:
    cfg = tiny_config(tmp_path, dataset, packing=packing)
    loss_a, grads_a = _grads_for(cfg, micro=1, accum=4, mode=mode)
    loss_b, grads_b = _grads_for(cfg, micro=4, accum=1, mode=mode)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    worst = max(float((grads_a[n] - grads_b[n]).abs().max()) for n in grads_a)
    scale = max(float(g.abs().max()) for g in grads_a.values())
    assert worst <= 1e-5 * scale, f"max grad diff {worst} (grad scale {scale})"


def test_tiny_end_to_end_loss_falls_and_writes_contract_2(tmp_path: Path, dataset: Path) -> None:
    cfg = tiny_config(tmp_path, dataset, max_steps=30, schedule__warmup_steps=3, eval_every=15)
    final = run_training(cfg, progress=False)
    assert final == cfg.output_dir / "final"
    losses = [r["loss"] for r in read_metrics(cfg.output_dir / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 1.0, f"loss did not fall: first {first:.3f} last {last:.3f}"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "mft_train.json"):
        assert (final / name).is_file(), name
    record = json.loads((final / "mft_train.json").read_text())
    assert record["step"] == 30 and len(record["dataset_manifest_hash"]) >= 16
    assert set(record["valid_loss_per_task"]) == {"chat-c", "code-a", "code-b"}
    assert all(v is not None and v < first for v in record["valid_loss_per_task"].values())
    assert record["config"]["max_steps"] == 30
    metrics = read_metrics(cfg.output_dir / "metrics.jsonl")
    at_15 = [r for r in metrics if r["step"] == 15 and "valid_loss" in r]
    assert len(at_15) == 1 and all(f"valid_loss/{t}" in at_15[0] for t in ("chat-c", "code-a", "code-b"))
    train = [r for r in metrics if "lr" in r]
    assert all(r[f"weight/{t}"] == pytest.approx(1 / 3) for r in train for t in ("chat-c", "code-a", "code-b"))
    assert all(isinstance(r.get("train_loss/code-a"), float) for r in train)  # the largest task is in every step
    lrs = [r["lr"] for r in metrics if "lr" in r]
    assert lrs[0] == pytest.approx(1e-2 / 3) and lrs[2] == pytest.approx(1e-2)  # warm-up in optimizer steps
