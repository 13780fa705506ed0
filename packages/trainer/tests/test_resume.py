"""Resume: a run stopped at step k and resumed equals the uninterrupted run, bit for bit on CPU (weights and losses).

Also: checkpoints are written under a temporary name and only complete ones are resumed from; keep_last prunes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from mft_trainer import checkpoint as ckpt
from mft_trainer.loop import run_training
from mft_trainer.metrics_log import read_metrics
from safetensors.torch import load_file
from trainer_testkit import tiny_config


def _weights(final: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (final / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(final / name))


def _losses(out: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["lr"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize(
    "variant",
    [
        {"peft__method": "full", "model__dtype": "fp32"},
        # LoRA with dropout: the RNG state must be restored for the same dropout masks after resume.
        {"peft__method": "lora", "peft__r": 4, "peft__dropout": 0.2, "model__dtype": "bf16"},
    ],
    ids=["full-fp32", "lora-dropout-bf16"],
)
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path: Path, dataset: Path, variant: dict) -> None:
    common = {"max_steps": 6, "save_every": 2, "schedule__warmup_steps": 2, "optimizer__weight_decay": 0.1,
              **variant}
    straight = tiny_config(tmp_path / "a", dataset, **common)
    final_a = run_training(straight, progress=False)

    resumed = tiny_config(tmp_path / "b", dataset, **common)
    run_training(resumed, progress=False, stop_at_step=3)  # preempted after step 3: checkpoint step-3, no final
    assert not (resumed.output_dir / "final").exists()
    assert [s for s, _ in ckpt.complete_checkpoints(resumed.output_dir)] == [2, 3]
    final_b = run_training(resumed, progress=False)  # resume: auto

    assert _losses(straight.output_dir) == _losses(resumed.output_dir)  # exact floats, after truncating re-runs
    wa, wb = _weights(final_a), _weights(final_b)
    assert wa.keys() == wb.keys() and len(wa) > 0
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    events = [r for r in read_metrics(resumed.output_dir / "metrics.jsonl") if r.get("event") == "resumed"]
    assert len(events) == 1 and events[0]["step"] == 3


def test_only_complete_checkpoints_are_resumed_and_keep_last(tmp_path: Path, dataset: Path) -> None:
    cfg = tiny_config(tmp_path, dataset, max_steps=4, save_every=1, keep_last=2)
    run_training(cfg, progress=False, stop_at_step=3)
    out = cfg.output_dir
    assert [s for s, _ in ckpt.complete_checkpoints(out)] == [2, 3]
    step3 = ckpt.checkpoint_dir(out, 3)
    for name in ("trainer_state.pt", "rank-0.pt", "meta.json", "model/config.json", "model/tokenizer.json"):
        assert (step3 / name).is_file(), name
    # A crash while writing step 4 leaves a temp dir and maybe a step dir without meta.json: neither is resumed.
    shutil.copytree(step3, ckpt.temp_dir_for(out, 4))
    broken = ckpt.checkpoint_dir(out, 5)
    shutil.copytree(step3, broken)
    (broken / "meta.json").unlink()
    assert ckpt.latest_checkpoint(out) == step3
    assert ckpt.resolve_resume("auto", out) == step3
    assert ckpt.resolve_resume("never", out) is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.resolve_resume(broken, out)
    run_training(cfg, progress=False)
    assert not ckpt.temp_dir_for(out, 4).exists()
    assert [s for s, _ in ckpt.complete_checkpoints(out)] == [3, 4]
    assert [s for s, _, _ in _losses(out)] == [1, 2, 3, 4]
