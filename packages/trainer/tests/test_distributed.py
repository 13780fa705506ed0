"""2-process CPU (gloo) runs under torchrun for DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3, each compared with one
process on the same global batch; parameters/optimizer really sharded; a resumed 2-process run equals the straight one.

The global batch is 4 rows per optimizer step: 1 process x micro 1 x accum 4, or 2 processes x micro 1 x accum 2. The
data stream defines the rows of step s globally, so both see the same rows; the only difference is the order of
floating-point sums (all-reduce vs local accumulation), hence tolerances rather than bit equality across world sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mft_trainer.loop import run_training
from mft_trainer.metrics_log import read_metrics
from safetensors.torch import load_file
from trainer_testkit import tiny_config, write_prepared_dataset

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

BACKENDS = {
    "ddp": ["distributed.backend=ddp"],
    "fsdp2": ["distributed.backend=fsdp2"],
    "zero2": ["distributed.backend=deepspeed", "distributed.zero_stage=2"],
    "zero3": ["distributed.backend=deepspeed", "distributed.zero_stage=3"],
}
COMMON = {"max_steps": 4, "save_every": 2, "micro_batch_size": 1, "schedule__warmup_steps": 1,
          "optimizer__weight_decay": 0.1, "clip_grad": 1.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dist")
    dataset = write_prepared_dataset(root / "prepared")
    single = tiny_config(root / "single", dataset, grad_accum=4, **COMMON)
    run_training(single, progress=False)
    two = tiny_config(root / "two", dataset, grad_accum=2, **COMMON)
    config = root / "two.yaml"
    config.write_text(yaml.safe_dump(two.to_yaml_dict(only_set=True)))
    return {"root": root, "single": single.output_dir, "config": config}


def torchrun(config: Path, overrides: list[str], nproc: int = 2) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "mft_trainer.cli", "train", str(config), "--no-progress", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"


def step_losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_two_processes_match_one_and_resume(setup: dict, backend: str) -> None:
    out = setup["root"] / backend
    torchrun(setup["config"], [*BACKENDS[backend], f"output_dir={out}"])

    # same trajectory as 1 process on the same global batch
    single, multi = step_losses(setup["single"]), step_losses(out)
    assert len(multi) == 4
    assert multi == pytest.approx(single, rel=1e-5, abs=1e-6)
    w1 = load_file(str(setup["single"] / "final" / "model.safetensors"))
    w2 = load_file(str(out / "final" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    max_diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"{backend}: max |param diff| 1 vs 2 processes = {max_diff:.3g}; losses {multi}")
    assert max_diff < 1e-4

    # sharding evidence, recorded by rank 0 at start-up
    started = next(r for r in read_metrics(out / "metrics.jsonl") if r.get("event") == "started")
    assert started["world_size"] == 2
    local, full = started["param_elements_this_rank"], started["param_elements_full"]
    print(f"{backend}: rank 0 holds {local} of {full} parameter elements; "
          f"optimizer partition {started['optimizer_partition_elements_this_rank']} "
          f"of {started['trainable_elements']} trainable")
    if backend in ("fsdp2", "zero3"):
        assert local <= 0.55 * full, "parameters are not sharded"
    else:
        assert local == full
    if backend in ("zero2", "zero3"):
        assert started["optimizer_partition_elements_this_rank"] <= 0.55 * started["trainable_elements"]

    # an interrupted 2-process run (lost everything after step 2) resumes to the same weights, bit for bit
    final_weights = w2
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "checkpoints" / "step-4")
    torchrun(setup["config"], [*BACKENDS[backend], f"output_dir={out}"])
    resumed = load_file(str(out / "final" / "model.safetensors"))
    for k in final_weights:
        assert torch.equal(final_weights[k], resumed[k]), k
    assert step_losses(out) == multi
    events = [r for r in read_metrics(out / "metrics.jsonl") if r.get("event") == "resumed"]
    assert len(events) == 1 and events[0]["step"] == 2


COBA_2P = ["loss.mode=coba", "loss.coba.warmup=1", "loss.coba.history=4", "loss.validation.slice=valid",
           "loss.validation.slice_size=1000", "eval_every=2"]


def test_coba_two_processes_match_one(setup: dict) -> None:
    """CoBa under FSDP2 (every rank in every validation forward, all-reduced slice losses): the same task weights,
    losses and per-task validation as one process. The slice is the whole valid split (slice=valid, slice_size
    above its size), so 1 and 2 processes read the same samples."""
    root = setup["root"]
    single = tiny_config(root / "coba-single", setup["config"].parent / "prepared", grad_accum=4, **COMMON,
                         loss={"mode": "coba", "coba": {"warmup": 1, "history": 4},
                               "validation": {"slice": "valid", "slice_size": 1000}}, eval_every=2)
    run_training(single, progress=False)
    out = root / "coba-fsdp2"
    torchrun(setup["config"], [*BACKENDS["fsdp2"], f"output_dir={out}", *COBA_2P])
    keys = [k for k in read_metrics(single.output_dir / "metrics.jsonl")[-1]
            if k.startswith(("weight/", "valid_loss", "slice_loss/")) or k == "loss"]
    one = [r for r in read_metrics(single.output_dir / "metrics.jsonl") if "lr" in r]
    two = [r for r in read_metrics(out / "metrics.jsonl") if "lr" in r]
    assert len(one) == len(two) == 4 and any(k.startswith("weight/") for k in keys)
    for a, b in zip(one, two, strict=True):
        for k in keys:
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (a["step"], k)
    assert any(abs(one[-1][k] - 1 / 3) > 1e-4 for k in keys if k.startswith("weight/")), "CoBa weights did not move"
    rec1 = json.loads((single.output_dir / "final" / "mft_train.json").read_text())
    rec2 = json.loads((out / "final" / "mft_train.json").read_text())
    assert rec2["valid_loss_per_task"] == pytest.approx(rec1["valid_loss_per_task"], rel=1e-4)
