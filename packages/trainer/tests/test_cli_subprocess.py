"""mft-train in its own process with stdout and stderr to pipes, as a cluster job or `mft run`'s stage logs run it:
plain progress lines every log_every steps; none of the libraries' noise (bitsandbytes' kernels warning, DeepSpeed's
accelerator line, transformers' shard bars and FutureWarning) on a full fine-tune or a LoRA run; importing the CLI
imports neither bitsandbytes nor DeepSpeed (nor torch); OMP_WAIT_POLICY=PASSIVE is in effect unless the user set it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trainer_testkit import TINY_INIT, tiny_tokenizer_dir, write_prepared_dataset

NOISE = ("gemm_4bit_forward", "kernels-community", "Setting accelerator to CPU", "Writing model shards",
         "Loading weights", "FutureWarning", "Traceback")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MFT_DEBUG")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def _mft_train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mft_trainer.cli", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=600)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-subprocess")
    write_prepared_dataset(root / "prepared")
    raw = {
        "model": {"init": TINY_INIT, "tokenizer": str(tiny_tokenizer_dir()), "dtype": "fp32"},
        "peft": {"method": "full"},
        "data": {"path": "prepared", "num_workers": 0, "cache_dir": "cache"},
        "output_dir": "run",
        "max_steps": 4,
        "save_every": 2,
        "seq_length": 256,
        "micro_batch_size": 2,
        "grad_accum": 1,
        "logging": {"tensorboard": False, "log_every": 2},
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_importing_the_cli_loads_no_heavy_or_optional_library() -> None:
    code = ("import sys, mft_trainer.cli; print(sorted(m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', "
            "'deepspeed') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_full_fine_tune_logs_plain_lines_and_no_noise(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    result = _mft_train("train", str(config), f"output_dir={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"starting fresh in {out}"
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in steps] == ["step 2/4", "step 4/4"]
    for field in ("loss ", "lr ", " tok/s", "elapsed ", "eta ", "chat-c ", "code-a ", "code-b "):
        assert field in steps[-1], (field, steps[-1])
    assert any(line.startswith("valid step 4/4 | chat-c ") for line in lines)
    assert lines[-1] == f"final model: {out / 'final'}"
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, noise
    # Rerunning into the finished folder refuses in one line naming the flag.
    again = _mft_train("train", str(config), f"output_dir={out}")
    assert again.returncode == 1 and again.stderr.startswith(f"error: output_dir {out} holds a finished run")
    assert "--overwrite" in again.stderr and again.stderr.count("\n") == 1


def test_lora_run_and_merge_print_no_noise(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    result = _mft_train("train", str(config), f"output_dir={out}", "peft.method=lora", "peft.r=4", "max_steps=2",
                        "save_every=1", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 2/2 | loss " in result.stdout
    merged = _mft_train("merge", "--adapter", str(out / "final"), "--output", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr + merged.stdout + merged.stderr, noise


def test_openmp_waits_passively_unless_the_user_says_otherwise(config: Path) -> None:
    # libgomp prints its settings when torch loads it (OMP_DISPLAY_ENV); --dry-run loads torch but no model.
    default = _mft_train("train", str(config), "--dry-run", env=_env(OMP_DISPLAY_ENV="TRUE"))
    assert default.returncode == 0, default.stderr
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in default.stderr
    chosen = _mft_train("train", str(config), "--dry-run", env=_env(OMP_DISPLAY_ENV="TRUE", OMP_WAIT_POLICY="ACTIVE"))
    assert chosen.returncode == 0, chosen.stderr
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in chosen.stderr
