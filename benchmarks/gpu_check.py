"""One prepared GPU check: packed training speed, memory, MFU and packed-vs-unpacked losses per attention path.

    python benchmarks/gpu_check.py [--out gpu_check.json]      one H100/H200-class GPU, under 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny         the same code on a tiny llama (CI, seconds)

Prints ONE JSON object (also written to --out). Every section that cannot run here (no CUDA, no bitsandbytes, a
torch without varlen, the time budget spent) is reported with its reason instead of failing the run.

1. `throughput`: a llama built from a config (TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads / 4 kv
   heads, intermediate 5632; random init; `--tiny`: hidden 64, 2 layers), our tokenizer
   (`mft_trainer.data.tokenizer_build.train_tokenizer` on this interpreter's standard-library source, no hub),
   Evol-like sample lengths (log-normal, median ~350 tokens, like benchmarks/train_step_speed.py), bf16 autocast.
   For full fine-tuning and LoRA (r 64, all linear layers), on the same samples of every step:
       ours/<attention>   mft-train's step: loop.forward_backward (forward.token_losses + StepLoss) then
                          backend.step (clip, AdamW, schedule), on rows packed best-fit-decreasing at seq 4096;
                          `auto` is what `model.attn_implementation: auto` resolves to here, `sdpa` segment-wise
                          sdpa or the 4-D mask per micro-batch (the cost model), `flex_attention` compiled flex
       bare/padded        a bare transformers loop: model(input_ids, attention_mask, labels).loss.backward(),
                          torch AdamW, on the padded micro-batches a user gets without packing (8 samples each,
                          padded to the longest, gradient accumulation over the step)
       bare/packed        the same loop on our packed rows with restarting position_ids and no attention mask
                          (transformers' own packed-sequence detection, docs/reference.md §7)
   tokens/s (real tokens; median step after warm-up), peak GPU memory, and model FLOPs utilisation:
       MFU = FLOPs / step time / peak bf16 FLOPs of the GPU, FLOPs = k * N * T + 6 * n_layers * d_model * sum(len_i^2)
       N: parameters except the input embedding; T: real tokens of the step; len_i: the packed segments' lengths
       (attention counted per segment, causal, not over the whole row); k = 6 for full fine-tuning, 4 for LoRA (the
       frozen weights get no weight gradient). The same FLOPs (the useful work) divide every system's time.
2. `isolation`: a small llama, packed vs unpacked (each sample alone in its own row) per-token losses and
   gradients for every packed-attention path that runs here (sdpa segments, sdpa 4-D mask, eager, flex_attention,
   torch_varlen, flash_attention_2), beside a leaking baseline (packed rows with an all-ones mask).
3. `qlora`: one step of the 1.1B llama with bitsandbytes NF4 and bf16 storage, when bitsandbytes imports.

Our packages are taken from this checkout (packages/*/src on sys.path) or an installed copy; the trainer needs
pydantic, rich, pyarrow and pyyaml besides torch/transformers/peft/accelerate (see `missing_modules` in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for _src in sorted((REPO / "packages").glob("*/src"), reverse=True):
    sys.path.insert(0, str(_src))

MODEL_1B = {"architecture": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
            "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 4096,
            "tie_word_embeddings": False}
MODEL_TINY = {"architecture": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
              "tie_word_embeddings": False}
MODEL_ISOLATION = {"architecture": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                   "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 4096,
                   "tie_word_embeddings": False}
# Dense bf16 tensor-core peak per GPU (NVIDIA datasheets, without sparsity), by a substring of the device name.
PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100 PCIe": 756.0e12, "H100": 989.4e12, "A100": 312.0e12, "L40S": 362.1e12}
TRAINER_MODULES = ("pydantic", "rich", "pyarrow", "yaml")
# flex_attention last: its compiles (packed and unpacked shapes) are the slowest part of the section.
PATHS = ("sdpa-segments", "sdpa-mask", "eager", "torch_varlen", "flash_attention_2", "flex_attention")
FLEX_COMPILE_RESERVE_S = 120.0

Batch = dict[str, torch.Tensor]


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Budget:
    """Wall-clock budget: sections that would start after `seconds` are reported as skipped."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a section; an exception becomes `{"status": "error", "reason": ...}` instead of ending the run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the JSON must report every failure, not stop at the first
        log(f"error: {type(exc).__name__}: {exc}")
        return {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:500]}",
                "where": traceback.format_exc(limit=3)[-800:]}


def _reason(exc: Exception) -> str:
    """The line of a (pydantic) error that names our key, else its first line."""
    lines = str(exc).splitlines()
    named = [line.strip() for line in lines if "model." in line]
    line = (named or lines or [type(exc).__name__])[0]
    return line[line.find("model."):].split(" [type=")[0][:300] if named else line[:300]


def missing_modules() -> list[str]:
    return [name for name in TRAINER_MODULES if importlib.util.find_spec(name) is None]


# ------------------------------------------------------------------------------------------------- setup
def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "cuda": torch.version.cuda,
                            "device": str(device), "cpu_threads": torch.get_num_threads()}
    for name in ("peft", "accelerate", "flash_attn", "bitsandbytes"):
        try:
            info[name] = importlib.import_module(name).__version__
        except Exception as exc:  # noqa: BLE001 - absent or broken: say which
            info[name] = f"unavailable: {type(exc).__name__}: {str(exc)[:120]}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return info


def build_tokenizer(vocab_size: int, corpus_bytes: int, out_dir: Path) -> Any:
    """Our byte-level BPE trained on this interpreter's standard-library source (no hub, no network)."""
    from mft_trainer.data.tokenizer_build import train_tokenizer

    texts, total = [], 0
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total >= corpus_bytes:
            break
    return train_tokenizer(texts, vocab_size, out_dir)


def evol_steps(seq: int, rows: int, steps: int, vocab: int, seed: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per step, the samples (token ids, loss mask) that fill `rows` rows of `seq` best-fit-decreasing."""
    from mft_trainer.data.packing import best_fit_decreasing

    rng, gen = random.Random(seed), np.random.default_rng(seed)
    scale = seq / 4096  # --tiny keeps the shape of the length distribution at its shorter rows
    out = []
    for _ in range(steps):
        samples: list[tuple[np.ndarray, np.ndarray]] = []
        while True:
            n = max(8, min(seq, int(scale * rng.lognormvariate(5.86, 0.75))))
            mask = np.zeros(n, bool)
            mask[int(n * rng.uniform(0.15, 0.4)):] = True
            samples.append((gen.integers(3, vocab, n), mask))
            if len(best_fit_decreasing([len(s[0]) for s in samples], seq)) > rows:
                samples.pop()
                break
        out.append(samples)
    return out


def packed_batch(samples: list[tuple[np.ndarray, np.ndarray]], seq: int) -> Batch:
    from mft_trainer.data.packing import best_fit_decreasing, collate_rows, make_segment

    segs = [make_segment(ids, mask, 0, i) for i, (ids, mask) in enumerate(samples)]
    bins = best_fit_decreasing([len(s) for s in segs], seq)
    return collate_rows([[segs[i] for i in b] for b in bins], pad_id=1, length=seq)


def padded_batches(samples: list[tuple[np.ndarray, np.ndarray]], per_batch: int, seed: int) -> list[Batch]:
    """What a user gets without packing: random order, `per_batch` samples each, padded to the longest (x 8)."""
    from mft_trainer.data.packing import IGNORE_INDEX, padded_length

    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    out = []
    for i in range(0, len(order), per_batch):
        chunk = [samples[j] for j in order[i:i + per_batch]]
        width = padded_length(max(len(ids) for ids, _ in chunk))
        ids = torch.full((len(chunk), width), 1, dtype=torch.long)
        attn = torch.zeros(len(chunk), width, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for r, (tok, mask) in enumerate(chunk):
            n = len(tok)
            ids[r, :n] = torch.from_numpy(tok)
            attn[r, :n] = 1
            labels[r, :n] = torch.where(torch.from_numpy(mask), torch.from_numpy(tok), IGNORE_INDEX)
        out.append({"input_ids": ids, "attention_mask": attn, "labels": labels})
    return out


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ------------------------------------------------------------------------------------------------- FLOPs
def segment_lengths(batch: Batch) -> list[int]:
    from mft_trainer.data.packing import segment_spans

    seg = batch["segment_ids"].cpu()
    return [int((seg[row, start:end] > 0).sum()) for row, start, end in segment_spans(seg)]


def step_flops(n_params: int, n_layers: int, d_model: int, lengths: list[int], weight_grads: bool) -> float:
    """Training FLOPs of one step (the formula in the module docstring)."""
    tokens = sum(lengths)
    return (6 if weight_grads else 4) * n_params * tokens + 6 * n_layers * d_model * sum(n * n for n in lengths)


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "no bf16 peak is defined for a CPU"
    name = torch.cuda.get_device_properties(device).name
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value, f"{name}: {value:.4g} dense bf16 FLOP/s ({key} datasheet)"
    return None, f"{name}: not in PEAK_BF16_FLOPS"


# ------------------------------------------------------------------------------------------------- systems
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def measured(device: torch.device) -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def train_config(model_init: dict, tokenizer_dir: Path, seq: int, rows: int, method: str, attn: str) -> Any:
    from mft_trainer.config import TrainConfig

    peft = {"method": method} if method == "full" else {"method": method, "r": 64, "alpha": 128, "dropout": 0.0}
    return TrainConfig.model_validate({
        "model": {"init": model_init, "tokenizer": str(tokenizer_dir), "dtype": "auto", "attn_implementation": attn},
        "peft": peft, "data": {"path": str(REPO)}, "output_dir": str(Path(tempfile.gettempdir()) / "gpu-check"),
        "seq_length": seq, "micro_batch_size": rows, "max_steps": 1000, "optimizer": {"lr": 1e-4},
    })


def switch_attention(model: torch.nn.Module, path: str) -> str:
    """Put a built model on another packed-attention path; returns the name token_losses takes."""
    from mft_trainer.model import attention, unwrap

    hf = unwrap.hf_model(model)
    if path in ("sdpa", "sdpa-segments", "sdpa-mask"):
        if hf.config._attn_implementation not in ("sdpa", attention.SEGMENT_SDPA):
            hf.set_attn_implementation("sdpa")
        attention.set_packed_attention(model, "mask" if path == "sdpa-mask" else "segments")
        return "sdpa"
    if path == "torch_varlen":
        from mft_trainer.model.native_attention import TORCH_VARLEN, register_torch_varlen

        register_torch_varlen()
        hf.set_attn_implementation(TORCH_VARLEN)
        return path
    hf.set_attn_implementation(path)
    return path


def time_steps(step: Callable[[list[Batch]], float], steps: list[list[Batch]], warmup: int,
               device: torch.device) -> tuple[list[float], float]:
    """Run `warmup` untimed steps (compiles, allocator), then time each step; returns (seconds, last loss)."""
    loss = float("nan")
    for micro in steps[:warmup]:
        loss = step(micro)
    sync(device)
    seconds = []
    for micro in steps[warmup:]:
        tic = time.perf_counter()
        loss = step(micro)
        sync(device)
        seconds.append(time.perf_counter() - tic)
    return seconds, loss


def ours(model: torch.nn.Module, cfg: Any, device: torch.device, attn: str,
         packed: list[list[Batch]], warmup: int) -> dict[str, Any]:
    from mft_trainer import loop
    from mft_trainer.distributed import DistEnv, wrap_model
    from mft_trainer.loss.step import StepLoss

    env = DistEnv(backend="none", rank=0, world_size=1, local_rank=0, device=device)
    with measured(device) as mem:
        backend = wrap_model(model, cfg, env)
        step_loss = StepLoss("token", 1)

        def step(micro: list[Batch]) -> float:
            loop.forward_backward(backend, step_loss, micro, attn, 1)
            backend.step(cfg.clip_grad)
            result = step_loss.end_step()
            return float(getattr(result, "loss", float("nan")))

        seconds, loss = time_steps(step, packed, warmup, device)
        backend.optimizer.zero_grad(set_to_none=True)
    return {"seconds": seconds, "loss_last": loss, **mem}


def bare(model: torch.nn.Module, device: torch.device, batches: list[list[Batch]], warmup: int,
         autocast: torch.dtype | None) -> dict[str, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    with measured(device) as mem:
        optimizer = torch.optim.AdamW(params, lr=1e-4)

        def step(micro: list[Batch]) -> float:
            total = 0.0
            for mb in micro:
                with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                    loss = model(**mb, use_cache=False).loss / len(micro)
                loss.backward()
                total += float(loss.detach())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return total

        seconds, loss = time_steps(step, batches, warmup, device)
    return {"seconds": seconds, "loss_last": loss, **mem}


def summarise(raw: dict[str, Any], real_tokens: list[int], flops: list[float], peak: float | None) -> dict[str, Any]:
    seconds = raw.pop("seconds")
    timed_tokens, timed_flops = real_tokens[-len(seconds):], flops[-len(seconds):]
    rates = [t / s for t, s in zip(timed_tokens, seconds, strict=True)]
    out = {"status": "ok", "tokens_per_s": round(statistics.median(rates)), "step_s": [round(s, 4) for s in seconds],
           **raw}
    if peak is not None:
        out["mfu"] = round(statistics.median(f / s / peak for f, s in zip(timed_flops, seconds, strict=True)), 4)
    return out


def throughput(args: argparse.Namespace, device: torch.device, tokenizer_dir: Path, vocab: int,
               budget: Budget) -> dict[str, Any]:
    from mft_trainer.model import build

    model_init = MODEL_TINY if args.tiny else MODEL_1B
    seq, rows = args.seq, args.rows
    samples = evol_steps(seq, rows, args.warmup + args.steps, vocab, seed=0)
    packed = [[to_device(packed_batch(s, seq), device)] for s in samples]
    padded = [[to_device(b, device) for b in padded_batches(s, args.padded_per_batch, seed=i)]
              for i, s in enumerate(samples)]
    bare_packed = [[to_device({"input_ids": b["input_ids"], "position_ids": b["position_ids"],
                               "labels": _labels_from_targets(b)}, device) for b in micro] for micro in packed]
    lengths = [segment_lengths(micro[0]) for micro in packed]
    real = [sum(x) for x in lengths]
    padded_positions = sum(b["input_ids"].numel() for micro in padded for b in micro)
    peak, peak_note = peak_flops(device)
    result: dict[str, Any] = {
        "data": {"seq_length": seq, "rows_per_step": rows, "samples_per_step": [len(s) for s in samples],
                 "real_tokens_per_step": real, "mean_segment_length": round(statistics.mean(sum(lengths, [])), 1),
                 "packed_pad_fraction": round(1 - sum(real) / (len(packed) * rows * seq), 4),
                 "padded_pad_fraction": round(1 - sum(real) / padded_positions, 4),
                 "padded_samples_per_micro_batch": args.padded_per_batch,
                 "warmup_steps": args.warmup, "timed_steps": args.steps},
        "peak_flops": peak, "peak_flops_note": peak_note,
    }
    autocast = build.resolve_dtype("auto", device)
    autocast = None if autocast == torch.float32 else autocast
    for method in ("full", "lora"):
        if budget.left() < args.section_reserve_s:
            result[method] = {"status": "skipped", "reason": f"time budget: {budget.elapsed():.0f} s spent"}
            continue
        cfg = train_config(model_init, tokenizer_dir, seq, rows, method, "auto")
        result[method] = guarded(lambda cfg=cfg, method=method: throughput_method(
            args, device, cfg, method, vocab, budget, packed, {"bare/padded": padded,
                                                              "bare/packed-position-ids": bare_packed},
            lengths, peak, autocast))
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["mfu_formula"] = ("MFU = FLOPs / step_seconds / peak_bf16_flops; FLOPs = k*N*T + 6*n_layers*d_model*"
                             "sum_i(len_i^2); N = parameters without the input embedding, T = real tokens, len_i = "
                             "packed segment lengths (causal attention per segment, not per row), k = 6 full / 4 LoRA")
    return result


def throughput_method(args: argparse.Namespace, device: torch.device, cfg: Any, method: str, vocab: int,
                      budget: Budget, packed: list[list[Batch]], bare_batches: dict[str, list[list[Batch]]],
                      lengths: list[list[int]], peak: float | None, autocast: torch.dtype | None) -> dict[str, Any]:
    """Our step on each attention path, then the bare loops, on one model built for `method` (full or lora)."""
    from mft_trainer.model import build, unwrap

    log(f"throughput/{method}: building the model")
    torch.manual_seed(0)
    model = build.build_model(cfg.model, cfg.peft, vocab_size=vocab, device=device)
    hf = unwrap.hf_model(model)
    n_params = sum(p.numel() for p in hf.parameters()) - hf.get_input_embeddings().weight.numel()
    flops = [step_flops(n_params, hf.config.num_hidden_layers, hf.config.hidden_size, x,
                        weight_grads=method == "full") for x in lengths]
    real = [sum(x) for x in lengths]
    section: dict[str, Any] = {"attention_auto": hf.mft_attention, "parameters": sum(p.numel() for p in hf.parameters()),
                               "parameters_in_flops": n_params,
                               "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    auto = hf.mft_attn_implementation
    variants = ["auto"] + (["sdpa", "flex_attention"] if method == "full" else [])
    for variant in variants:
        name = f"ours/auto={auto}" if variant == "auto" else f"ours/{variant}"
        reserve = FLEX_COMPILE_RESERVE_S if variant == "flex_attention" else args.variant_reserve_s
        if budget.left() < reserve:
            section[name] = {"status": "skipped", "reason": f"time budget: {budget.elapsed():.0f} s spent"}
            continue
        if variant == "flex_attention" and device.type == "cpu":
            section[name] = {"status": "unavailable", "reason": "flex attention has no CPU backward in torch "
                                                                f"{torch.__version__} (training needs CUDA)"}
            continue
        log(f"throughput/{method}: {name}")
        attn = auto if variant == "auto" else switch_attention(model, variant)
        section[name] = guarded(lambda attn=attn: summarise(ours(model, cfg, device, attn, packed, args.warmup),
                                                             real, flops, peak))
    switch_attention(model, "sdpa")  # the bare loops get transformers' plain sdpa (no spans given = sdpa)
    for name, batches in bare_batches.items():
        if budget.left() < args.variant_reserve_s:
            section[name] = {"status": "skipped", "reason": f"time budget: {budget.elapsed():.0f} s spent"}
            continue
        log(f"throughput/{method}: {name}")
        section[name] = guarded(lambda batches=batches: summarise(
            bare(model, device, batches, args.warmup, autocast), real, flops, peak))
    return section


def _labels_from_targets(batch: Batch) -> torch.Tensor:
    """Unshifted labels for transformers' own loss: token t is a label where targets[t - 1] supervises it."""
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1:] = batch["targets"][:, :-1]
    return labels


# ------------------------------------------------------------------------------------------------- isolation
def isolation(args: argparse.Namespace, device: torch.device, tokenizer_dir: Path, vocab: int,
              budget: Budget) -> dict[str, Any]:
    """Packed vs unpacked per-token losses and gradients for every packed-attention path that runs here."""
    from mft_trainer.config.model import ModelConfig, PeftSettings
    from mft_trainer.data.packing import IGNORE_INDEX, collate_rows, make_segment
    from mft_trainer.model import attention, build, forward

    seq = 512 if not args.tiny else 64
    gen = np.random.default_rng(1)
    lengths = [seq // 4 + 3, seq // 8, seq // 2 - 7, seq // 3, seq // 5, seq]
    samples = [make_segment(gen.integers(3, vocab, n), np.r_[np.zeros(n // 4, bool), np.ones(n - n // 4, bool)], 0, i)
               for i, n in enumerate(lengths)]
    rows = [[samples[0], samples[1], samples[2]], [samples[3], samples[4]], [samples[5]]]
    packed = to_device(collate_rows(rows, pad_id=1, length=seq), device)
    alone = [s for row in rows for s in row]
    unpacked = to_device(collate_rows([[s] for s in alone], pad_id=1, length=seq), device)
    dtype = "bf16" if device.type == "cuda" else "fp32"
    results: dict[str, Any] = {"model": MODEL_ISOLATION if not args.tiny else MODEL_TINY, "seq_length": seq,
                               "dtype": dtype, "segment_lengths": [[len(s) for s in row] for row in rows]}

    def where() -> list[tuple[int, int, int, int]]:
        out, u = [], 0
        for r, row in enumerate(rows):
            start = 0
            for s in row:
                out.append((r, start, u, len(s)))
                start, u = start + len(s), u + 1
        return out

    def losses_and_grads(model: torch.nn.Module, batch: Batch, attn: str) -> tuple[torch.Tensor, dict]:
        model.zero_grad(set_to_none=True)
        token_loss, _ = forward.token_losses(model, batch, attn)
        token_loss.sum().backward()
        return token_loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters()
                                             if p.grad is not None}

    def compare(packed_loss: torch.Tensor, unpacked_loss: torch.Tensor) -> float:
        worst = 0.0
        for prow, start, urow, n in where():
            got = packed_loss[prow, start:start + n - 1]
            want = unpacked_loss[urow, :n - 1]
            worst = max(worst, float((got - want).abs().max()))
        return worst

    def one_path(path: str) -> dict[str, Any]:
        requested = "sdpa" if path.startswith("sdpa") else path
        if path == "flex_attention" and device.type == "cpu":
            return {"status": "unavailable", "reason": f"flex attention has no CPU backward in torch "
                                                       f"{torch.__version__}; its CPU forward is tested in "
                                                       "tests/model/test_native_attention.py"}
        try:
            cfg = ModelConfig(init=results["model"], tokenizer=str(tokenizer_dir), dtype=dtype,
                              attn_implementation=requested)
            torch.manual_seed(0)
            model = build.build_model(cfg, PeftSettings(method="full"), vocab_size=vocab, device=device).eval()
        except ValueError as exc:
            return {"status": "unavailable", "reason": _reason(exc)}
        scale = attention.SEGMENT_COST_SCALE
        attention.SEGMENT_COST_SCALE = 0.0 if path == "sdpa-segments" else scale  # force the segment path
        try:
            if path == "sdpa-mask":
                attention.set_packed_attention(model, "mask")
            p_loss, p_grads = losses_and_grads(model, packed, requested)
            u_loss, u_grads = losses_and_grads(model, unpacked, requested)
        finally:
            attention.SEGMENT_COST_SCALE = scale
        rel = max(float((p_grads[n] - u_grads[n]).norm() / u_grads[n].norm().clamp_min(1e-12)) for n in u_grads)
        return {"status": "ok", "max_abs_token_loss_diff": compare(p_loss, u_loss),
                "max_rel_grad_diff": rel, "mean_token_loss": float(u_loss[unpacked["targets"] != IGNORE_INDEX].mean())}

    for path in PATHS:
        reserve = FLEX_COMPILE_RESERVE_S if path == "flex_attention" and device.type == "cuda" else 10.0
        if budget.left() < reserve:
            results[path] = {"status": "skipped", "reason": f"time budget: {budget.elapsed():.0f} s spent"}
            continue
        log(f"isolation: {path}")
        results[path] = guarded(lambda path=path: one_path(path))

    def leak() -> dict[str, Any]:
        cfg = ModelConfig(init=results["model"], tokenizer=str(tokenizer_dir), dtype=dtype, attn_implementation="sdpa")
        torch.manual_seed(0)
        model = build.build_model(cfg, PeftSettings(method="full"), vocab_size=vocab, device=device).eval()
        attention.set_packed_attention(model, "mask")
        with torch.no_grad():
            u_loss, _ = forward.token_losses(model, unpacked, "sdpa")
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                               attention_mask=torch.ones_like(packed["input_ids"]), use_cache=False).logits
            p_loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), packed["targets"],
                                                       ignore_index=IGNORE_INDEX, reduction="none")
        return {"status": "ok", "max_abs_token_loss_diff": compare(p_loss, u_loss),
                "what": "packed rows with an all-ones attention mask (segments see each other): what a leak looks like"}

    results["leak_baseline"] = guarded(leak)
    return results


# ------------------------------------------------------------------------------------------------- qlora
def qlora(args: argparse.Namespace, device: torch.device, tokenizer_dir: Path, vocab: int) -> dict[str, Any]:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: not usable here
        return {"status": "unavailable", "reason": f"bitsandbytes does not import ({type(exc).__name__}: "
                                                   f"{str(exc)[:200]}); bring its wheel along (no network)"}
    from mft_trainer.model import build, unwrap

    seq, rows = args.seq, args.rows
    cfg = train_config(MODEL_TINY if args.tiny else MODEL_1B, tokenizer_dir, seq, rows, "qlora", "auto")
    samples = evol_steps(seq, rows, 2, vocab, seed=7)
    packed = [[to_device(packed_batch(s, seq), device)] for s in samples]
    log("qlora: building the NF4 model")
    torch.manual_seed(0)
    model = build.build_model(cfg.model, cfg.peft, vocab_size=vocab, device=device)
    hf = unwrap.hf_model(model)
    storage = sorted({str(p.dtype) for n, p in hf.named_parameters() if "weight" in n and p.dtype != torch.float32})
    raw = ours(model, cfg, device, hf.mft_attn_implementation, packed, warmup=1)
    real = [int((micro[0]["segment_ids"] > 0).sum()) for micro in packed]
    return {**summarise(raw, real, [0.0] * len(real), None), "attention": hf.mft_attention,
            "quantized_weight_storage_dtypes": storage, "loss_finite": math.isfinite(raw["loss_last"])}


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny llama, seq 256: the CPU/CI mode")
    parser.add_argument("--seq", type=int, default=None, help="default 4096 (256 with --tiny)")
    parser.add_argument("--rows", type=int, default=None, help="packed rows per step; default 4 (2 with --tiny)")
    parser.add_argument("--padded-per-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="timed steps; default 4 (2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=400.0, help="what would start past this is skipped")
    parser.add_argument("--section-reserve-s", type=float, default=90.0)
    parser.add_argument("--variant-reserve-s", type=float, default=25.0)
    parser.add_argument("--sections", default="throughput,isolation,qlora")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.seq = args.seq or (256 if args.tiny else 4096)
    args.rows = args.rows or (2 if args.tiny else 4)
    args.steps = args.steps or (2 if args.tiny else 4)
    if args.tiny:
        args.warmup = min(args.warmup, 1)
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"check": "benchmarks/gpu_check.py", "date_utc": dt.datetime.now(dt.UTC).isoformat(
        timespec="seconds"), "args": {k: str(v) for k, v in vars(args).items()}}
    if device.type == "cuda" and not torch.cuda.is_available():
        report["status"] = "error"
        report["reason"] = "--device cuda but torch.cuda.is_available() is False; use --device cpu --tiny"
        return _emit(report, args.out)
    report["environment"] = environment(device)
    missing = missing_modules()
    report["missing_modules"] = missing
    if missing:
        report["status"] = "error"
        report["reason"] = (f"mft_trainer needs {', '.join(missing)}: bring the wheels along "
                            "(pip download ...; pip install --no-index --find-links wheels/ ...)")
        return _emit(report, args.out)
    from mft_trainer.model import native_attention

    report["varlen_available"] = dict(zip(("ok", "reason"), native_attention.varlen_available(device), strict=True))
    tokenizer_dir = Path(tempfile.mkdtemp(prefix="gpu-check-tokenizer-"))
    vocab_size = 512 if args.tiny else 32000
    log(f"training the tokenizer (vocab {vocab_size})")
    tic = time.perf_counter()
    tokenizer = build_tokenizer(vocab_size, 200_000 if args.tiny else 5_000_000, tokenizer_dir)
    report["tokenizer"] = {"vocab_size": len(tokenizer), "train_s": round(time.perf_counter() - tic, 2),
                           "corpus": f"standard-library source of Python {platform.python_version()}"}
    vocab = len(tokenizer)
    sections = [s for s in args.sections.split(",") if s]
    for name, fn in (("throughput", lambda: throughput(args, device, tokenizer_dir, vocab, budget)),
                     ("isolation", lambda: isolation(args, device, tokenizer_dir, vocab, budget)),
                     ("qlora", lambda: qlora(args, device, tokenizer_dir, vocab))):
        if name not in sections:
            continue
        if budget.left() < args.section_reserve_s / (3 if name != "throughput" else 1):
            report[name] = {"status": "skipped", "reason": f"time budget: {budget.elapsed():.0f} s spent"}
            continue
        report[name] = guarded(fn)
    report["status"] = "ok"
    report["elapsed_s"] = round(budget.elapsed(), 1)
    return _emit(report, args.out)


def _emit(report: dict[str, Any], out: Path | None) -> dict[str, Any]:
    text = json.dumps(report, indent=1, default=str)
    print(text, flush=True)
    if out is not None:
        out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
