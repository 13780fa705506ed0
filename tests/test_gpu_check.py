"""benchmarks/gpu_check.py in its CPU mode (`--device cpu --tiny`): every section runs or says why it cannot.

The GPU numbers themselves come from a run on a GPU machine; here the same code paths run on a tiny llama: our
step and the bare loops produce tokens/s, the sdpa/eager paths give packed == unpacked losses while the leaking
baseline does not, and the CUDA-only paths are reported unavailable with their reasons.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_flops_counts_attention_per_segment() -> None:
    gpu_check = load_gpu_check()
    # two segments of 3 and 1 tokens: 6 * N * 4 tokens + 6 * layers * d_model * (9 + 1)
    assert gpu_check.step_flops(100, 2, 8, [3, 1], weight_grads=True) == 6 * 100 * 4 + 6 * 2 * 8 * 10
    assert gpu_check.step_flops(100, 2, 8, [3, 1], weight_grads=False) == 4 * 100 * 4 + 6 * 2 * 8 * 10
    # one row of 4 tokens counts 16 query-key pairs, not the 10 of its two segments
    assert gpu_check.step_flops(100, 2, 8, [4], weight_grads=True) > gpu_check.step_flops(100, 2, 8, [3, 1], True)


def test_cpu_tiny_mode_reports_every_section(tmp_path: Path) -> None:
    gpu_check = load_gpu_check()
    threads = torch.get_num_threads()
    try:
        report = gpu_check.main(["--device", "cpu", "--tiny", "--threads", "1", "--steps", "1", "--warmup", "0",
                                 "--out", str(tmp_path / "gpu_check.json")])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(report, default=str))
    assert report["status"] == "ok" and report["missing_modules"] == []
    assert report["varlen_available"]["ok"] is False and "CUDA" in report["varlen_available"]["reason"]

    data = report["throughput"]["data"]
    assert data["packed_pad_fraction"] < data["padded_pad_fraction"]
    for method, systems in (("full", ("ours/auto=sdpa", "ours/sdpa", "bare/padded",
                                      "bare/packed-position-ids")),
                            ("lora", ("ours/auto=sdpa", "bare/padded", "bare/packed-position-ids"))):
        section = report["throughput"][method]
        assert section["attention_auto"]["implementation"] == "sdpa"
        for name in systems:
            assert section[name]["status"] == "ok", (method, name, section[name])
            assert section[name]["tokens_per_s"] > 0 and len(section[name]["step_s"]) == 1
    assert report["throughput"]["lora"]["trainable"] < report["throughput"]["full"]["trainable"]
    flex = report["throughput"]["full"]["ours/flex_attention"]
    assert flex["status"] == "unavailable" and "no CPU backward" in flex["reason"]

    iso = report["isolation"]
    for path in ("sdpa-segments", "sdpa-mask", "eager"):
        assert iso[path]["status"] == "ok", iso[path]
        assert iso[path]["max_abs_token_loss_diff"] < 1e-4 and iso[path]["max_rel_grad_diff"] < 1e-4
    assert iso["leak_baseline"]["max_abs_token_loss_diff"] > 0.05  # a leak is visible at this size
    assert iso["torch_varlen"]["status"] == "unavailable" and "torch_varlen" in iso["torch_varlen"]["reason"]
    assert iso["flash_attention_2"]["status"] == "unavailable" and "flash" in iso["flash_attention_2"]["reason"]
    assert iso["flex_attention"]["status"] == "unavailable"

    qlora = report["qlora"]
    assert qlora["status"] in ("ok", "unavailable"), qlora
    if qlora["status"] == "ok":
        assert qlora["loss_finite"] and qlora["tokens_per_s"] > 0
    else:
        assert "bitsandbytes" in qlora["reason"]
