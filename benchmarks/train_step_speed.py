"""One optimizer step of mft-train's path vs a bare PyTorch loop, in ONE process, interleaved (the machine is shared).

Same tiny llama (`--model small`: hidden 128, 4 layers, 4 heads / 2 kv heads, intermediate 384, vocab 4096; `--model
demo`: the CPU demo's shape, hidden 192, 6 heads of 32, intermediate 512, tied embeddings), same weights, same packed
batches (synthetic Evol-like sample lengths, log-normal median ~350 tokens, packed best-fit-decreasing; `--data
short`: 40-250 tokens like the demo's synthetic records; `--data pretrain`: one full segment per row), fp32 and bf16
autocast:

    ours-mask      forward.token_losses with the 4-D block-causal mask + losses.StepLoss + TorchBackend step
                   (exactly loop.forward_backward, then backend.step: clip + AdamW + LR schedule)
    ours-segments  the same with segment-wise causal sdpa on every micro-batch (attention.SEGMENT_COST_SCALE = 0)
    ours-auto      what mft-train does: per micro-batch, segments or the mask by attention.segment_attention_pays
    ours-auto-all-logits
                   the same but the LM head and the cross-entropy run on every position, prompts included (what
                   mft-train did before it computed logits only where targets are supervised)
    bare           model(input_ids, labels=input_ids) with no mask (plain causal sdpa, segments NOT isolated),
                   loss.backward(), torch.optim.AdamW defaults; a cost floor, not a correct packed trainer
    ours-flex      model.attn_implementation: flex_attention (transformers' compiled flex attention with our
                   segment BlockMask). Only with --forward-only on the CPU: torch 2.13's flex attention has no
                   CPU backward, so it cannot run a training step here (the step table says so)

    --forward-only times the no-grad forward of forward.token_losses instead of a step (what validation runs):
    ours-mask, ours-segments and ours-flex (compile untimed, in the warm-up), ratios against ours-mask.

    .venv/bin/python benchmarks/train_step_speed.py [--seq-lengths 256,512,2048] [--tokens-per-step 4096]
        [--steps 4] [--rounds 3] [--threads 2] [--dtypes fp32,bf16] [--data evol|short|pretrain] [--model small|demo]
        [--breakdown] [--forward-only]
        [--compare-threads]   (our bf16 step at 1 thread vs --threads, interleaved, instead of the systems)

Tokens/s counts real (non-pad) tokens; the ratio column divides by `bare` of the same round, dtype and length,
and the median over rounds is reported. `--breakdown` times the phases of one step (mask / spans, forward,
per-token loss, backward, optimizer) for each variant, to show where the time goes.

Threads: on this 2-core machine shared with other jobs (load ~3), 2 OpenMP threads with the default (spinning)
wait policy ran our step ~10x SLOWER than 1 thread (0.09-0.11x, measured 2026-11-25); with
`OMP_WAIT_POLICY=PASSIVE` in the environment 2 threads ran at 0.97x of 1 thread. Compare variants at one setting.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "packages" / "trainer" / "src"))

from mft_trainer import loop  # noqa: E402
from mft_trainer.config import TrainConfig  # noqa: E402
from mft_trainer.config.model import ModelConfig  # noqa: E402
from mft_trainer.data import packing  # noqa: E402
from mft_trainer.data.packing import best_fit_decreasing, collate_rows, make_segment  # noqa: E402
from mft_trainer.distributed import DistEnv, wrap_model  # noqa: E402
from mft_trainer.loss.step import StepLoss  # noqa: E402
from mft_trainer.model import attention, build, forward, unwrap  # noqa: E402

VOCAB = 4096
MODELS = {
    "small": {"architecture": "llama", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 384, "max_position_embeddings": 4096,
              "tie_word_embeddings": False},
    "demo": {"architecture": "llama", "hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 6,
             "num_key_value_heads": 6, "intermediate_size": 512, "max_position_embeddings": 4096,
             "tie_word_embeddings": True},
}
MODEL_INIT = MODELS["small"]  # main() sets it from --model
Batch = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------------- data
def packed_batches(seq: int, rows: int, count: int, data: str, seed: int) -> list[Batch]:
    """`count` micro-batches of `rows` x `seq`: Evol-like samples packed BFD, or full single-segment rows."""
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        if data == "pretrain":
            segs = [[make_segment(gen.integers(3, VOCAB, seq), np.ones(seq, bool), 0, i)] for i in range(rows)]
            batches.append(collate_rows(segs, pad_id=0, length=seq))
            continue
        samples = []
        while True:
            if data == "short":  # the CPU demo's synthetic records: 40-250 tokens
                n = min(seq, rng.randint(40, 250))
            else:
                n = max(8, min(seq, int(rng.lognormvariate(5.86, 0.75))))  # median ~350 tokens, long tail
            ids = gen.integers(3, VOCAB, n)
            mask = np.zeros(n, bool)
            mask[int(n * rng.uniform(0.15, 0.4)):] = True
            samples.append(make_segment(ids, mask, 0, len(samples)))
            bins = best_fit_decreasing([len(s) for s in samples], seq)
            if len(bins) > rows:
                samples.pop()
                bins = best_fit_decreasing([len(s) for s in samples], seq)
                break
        batches.append(collate_rows([[samples[i] for i in b] for b in bins], pad_id=0, length=seq))
    return batches


# ---------------------------------------------------------------------------------------------------- systems
def train_config(dtype: str, seq: int, rows: int) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"init": MODEL_INIT, "tokenizer": str(REPO), "dtype": dtype, "attn_implementation": "sdpa"},
        "peft": {"method": "full"}, "data": {"path": str(REPO)}, "output_dir": "/tmp/train-step-speed",
        "seq_length": seq, "micro_batch_size": rows, "max_steps": 1000, "optimizer": {"lr": 1e-3},
    })


class Ours:
    """mft-train's step: loop.forward_backward (token_losses + StepLoss + backend.backward) then backend.step."""

    def __init__(self, dtype: str, seq: int, rows: int, packed_attention: str, state: dict[str, Any],
                 all_logits: bool = False, force_segments: bool = False) -> None:
        cfg = train_config(dtype, seq, rows)
        self.attn = "flex_attention" if packed_attention == "flex" else "sdpa"
        # 0 makes segment_attention_pays say yes wherever there are spans; 1 is the trainer's cost model
        self.cost_scale = 0.0 if force_segments else attention.SEGMENT_COST_SCALE
        # modeling computes logits only at supervised positions when fewer than this fraction are supervised
        self.select_below = 0.0 if all_logits else forward._SELECT_LOGITS_BELOW
        self.model = build.build_model(cfg.model, cfg.peft, vocab_size=VOCAB, device="cpu")
        self.model.load_state_dict(state)
        if self.attn == "flex_attention":
            unwrap.hf_model(self.model).set_attn_implementation("flex_attention")
        else:
            assert attention.set_packed_attention(self.model, packed_attention) == packed_attention
        env = DistEnv(backend="none", rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        self.backend = wrap_model(self.model, cfg, env)
        self.step_loss = StepLoss("token", 1)
        self.clip = cfg.clip_grad

    def step(self, micro: list[Batch]) -> None:
        default, forward._SELECT_LOGITS_BELOW = forward._SELECT_LOGITS_BELOW, self.select_below
        scale, attention.SEGMENT_COST_SCALE = attention.SEGMENT_COST_SCALE, self.cost_scale
        try:
            loop.forward_backward(self.backend, self.step_loss, micro, self.attn, 1)
        finally:
            forward._SELECT_LOGITS_BELOW = default
            attention.SEGMENT_COST_SCALE = scale
        self.backend.step(self.clip)
        self.step_loss.end_step()

    @torch.no_grad()
    def forward_only(self, micro: list[Batch]) -> None:
        scale, attention.SEGMENT_COST_SCALE = attention.SEGMENT_COST_SCALE, self.cost_scale
        try:
            for mb in micro:
                forward.token_losses(self.model, mb, self.attn)
        finally:
            attention.SEGMENT_COST_SCALE = scale

    def phases(self, micro: list[Batch]) -> dict[str, float]:
        scale, attention.SEGMENT_COST_SCALE = attention.SEGMENT_COST_SCALE, self.cost_scale
        try:
            return self._phases(micro)
        finally:
            attention.SEGMENT_COST_SCALE = scale

    def _phases(self, micro: list[Batch]) -> dict[str, float]:
        hf = unwrap.hf_model(self.model)
        t: dict[str, float] = {}
        mb = micro[0]
        tic = time.perf_counter()
        from mft_trainer.data.packing import segment_spans

        spans = segment_spans(mb["segment_ids"])
        if not attention.segment_attention_pays(spans, *mb["segment_ids"].shape):
            packing.block_causal_mask(mb["segment_ids"], forward._compute_dtype(hf, hf.mft_autocast_dtype))
        t["mask/spans"] = time.perf_counter() - tic
        keep = mb["targets"] != -100
        select = int(keep.sum()) < self.select_below * keep.numel()
        tic = time.perf_counter()
        logits, _ = forward._forward(self.model, hf, mb, "sdpa", hf.mft_autocast_dtype, keep=keep if select else None)
        t["forward(incl mask)"] = time.perf_counter() - tic
        tic = time.perf_counter()
        if select:
            picked = torch.nn.functional.cross_entropy(logits.float(), mb["targets"][keep], reduction="none")
            loss = torch.zeros(keep.shape).masked_scatter(keep, picked)
        else:
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), mb["targets"].reshape(-1),
                                                     ignore_index=-100, reduction="none")
        self.step_loss.begin_step([mb])
        scalar = self.step_loss.micro_loss(loss.view(mb["targets"].shape), mb)
        t["token loss+StepLoss"] = time.perf_counter() - tic
        tic = time.perf_counter()
        self.backend.backward(scalar)
        t["backward"] = time.perf_counter() - tic
        tic = time.perf_counter()
        self.backend.step(self.clip)
        self.step_loss.end_step()
        t["clip+AdamW(foreach=False)+sched"] = time.perf_counter() - tic
        return t


class Bare:
    """A plain loop: HF loss from labels, causal sdpa with no mask, AdamW with torch's defaults, no clipping."""

    def __init__(self, dtype: str, state: dict[str, Any]) -> None:
        from transformers import AutoModelForCausalLM

        config = build.build_init_config(ModelConfig(init=MODEL_INIT, tokenizer=str(REPO)).init, VOCAB)
        self.model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
        self.model.load_state_dict(state)
        self.model.config.use_cache = False
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.autocast = torch.bfloat16 if dtype == "bf16" else None

    def _loss(self, mb: Batch) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None):
            return self.model(input_ids=mb["input_ids"], labels=mb["input_ids"], use_cache=False).loss

    def step(self, micro: list[Batch]) -> None:
        for mb in micro:
            (self._loss(mb) / len(micro)).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def phases(self, micro: list[Batch]) -> dict[str, float]:
        mb = micro[0]
        t: dict[str, float] = {"mask/spans": 0.0}
        tic = time.perf_counter()
        with torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None):
            logits = self.model(input_ids=mb["input_ids"], use_cache=False).logits
        t["forward(incl mask)"] = time.perf_counter() - tic
        tic = time.perf_counter()
        loss = self.model.loss_function(logits, mb["input_ids"], vocab_size=VOCAB)
        t["token loss+StepLoss"] = time.perf_counter() - tic
        tic = time.perf_counter()
        loss.backward()
        t["backward"] = time.perf_counter() - tic
        tic = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t["clip+AdamW(foreach=False)+sched"] = time.perf_counter() - tic
        return t


# ---------------------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], None]) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def run_length(seq: int, args: argparse.Namespace) -> None:
    rows = max(1, args.tokens_per_step // seq)
    steps = [packed_batches(seq, rows, 1, args.data, seed=s) for s in range(args.steps)]
    real = statistics.mean(int((s[0]["segment_ids"] > 0).sum()) for s in steps)
    segs = statistics.mean(float(s[0]["segment_ids"].amax(1).float().mean()) for s in steps)
    supervised = statistics.mean(float((s[0]["targets"] != -100).float().mean()) for s in steps)
    print(f"\n== seq {seq}, micro-batch {rows} rows, {real:.0f} real tokens/step ({supervised:.0%} of positions "
          f"supervised), {segs:.1f} segments/row, "
          f"data {args.data}, {args.steps} steps x {args.rounds} rounds, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    cfg = train_config("fp32", seq, rows)
    state = build.build_model(cfg.model, cfg.peft, vocab_size=VOCAB).state_dict()
    systems: dict[str, Any] = {}
    for dtype in args.dtypes:
        systems[f"bare/{dtype}"] = Bare(dtype, state)
        systems[f"ours-mask/{dtype}"] = Ours(dtype, seq, rows, "mask", state)
        systems[f"ours-segments/{dtype}"] = Ours(dtype, seq, rows, "segments", state, force_segments=True)
        systems[f"ours-auto/{dtype}"] = Ours(dtype, seq, rows, "segments", state)
        systems[f"ours-auto-all-logits/{dtype}"] = Ours(dtype, seq, rows, "segments", state, all_logits=True)
    for system in systems.values():  # warm-up, untimed
        system.step(steps[0])
    rates: dict[str, list[float]] = {name: [] for name in systems}
    ratios: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(args.rounds):
        round_rate = {}
        for name, system in systems.items():
            seconds = sum(timed(lambda s=s, system=system: system.step(s)) for s in steps)
            round_rate[name] = real * len(steps) / seconds
        for name, rate in round_rate.items():
            rates[name].append(rate)
            ratios[name].append(rate / round_rate[f"bare/{name.split('/')[1]}"])
    print(f"{'system':32s} {'tokens/s (median)':>18s} {'vs bare (median ratio)':>24s}")
    for name in systems:
        print(f"{name:32s} {statistics.median(rates[name]):18.0f} {statistics.median(ratios[name]):24.2f}")
    print(f"{'ours-flex':32s} cannot train on the CPU: torch {torch.__version__}'s flex attention has no CPU "
          "backward (see --forward-only)")
    for dtype in args.dtypes:
        seg_vs_mask = [a / b for a, b in zip(rates[f"ours-segments/{dtype}"], rates[f"ours-mask/{dtype}"],
                                             strict=True)]
        print(f"segments / mask ({dtype}): {statistics.median(seg_vs_mask):.2f}x (per round: "
              f"{', '.join(f'{r:.2f}' for r in seg_vs_mask)})")
        auto = [a / max(b, c) for a, b, c in zip(rates[f"ours-auto/{dtype}"], rates[f"ours-segments/{dtype}"],
                                                  rates[f"ours-mask/{dtype}"], strict=True)]
        print(f"auto / the faster of segments and mask ({dtype}): {statistics.median(auto):.2f}x (per round: "
              f"{', '.join(f'{r:.2f}' for r in auto)})")
        picked = [a / b for a, b in zip(rates[f"ours-auto/{dtype}"], rates[f"ours-auto-all-logits/{dtype}"],
                                        strict=True)]
        print(f"supervised-only logits / all logits ({dtype}): {statistics.median(picked):.2f}x (per round: "
              f"{', '.join(f'{r:.2f}' for r in picked)})")
    if args.breakdown:
        print("\nphase breakdown, seconds for one micro-batch (median of rounds, interleaved):")
        table: dict[str, dict[str, list[float]]] = {name: {} for name in systems}
        for _ in range(args.rounds):
            for name, system in systems.items():
                for phase, sec in system.phases(steps[0]).items():
                    table[name].setdefault(phase, []).append(sec)
        phases = list(next(iter(table.values())))
        print(f"{'system':32s} " + " ".join(f"{p:>22s}" for p in phases))
        for name, cols in table.items():
            print(f"{name:32s} " + " ".join(f"{statistics.median(cols[p]):22.4f}" for p in phases))


def run_forward_only(seq: int, args: argparse.Namespace) -> None:
    """No-grad forwards (validation) of the mask, segment and flex paths, interleaved; ratios against the mask."""
    rows = max(1, args.tokens_per_step // seq)
    steps = [packed_batches(seq, rows, 1, args.data, seed=s) for s in range(args.steps)]
    real = statistics.mean(int((s[0]["segment_ids"] > 0).sum()) for s in steps)
    segs = statistics.mean(float(s[0]["segment_ids"].amax(1).float().mean()) for s in steps)
    print(f"\n== forward only (no grad), seq {seq}, {rows} rows, {real:.0f} real tokens/micro-batch, {segs:.1f} "
          f"segments/row, data {args.data}, {args.steps} batches x {args.rounds} rounds, {torch.get_num_threads()} "
          "threads")
    torch.manual_seed(0)
    cfg = train_config("fp32", seq, rows)
    state = build.build_model(cfg.model, cfg.peft, vocab_size=VOCAB).state_dict()
    systems: dict[str, Ours] = {}
    for dtype in args.dtypes:
        systems[f"ours-mask/{dtype}"] = Ours(dtype, seq, rows, "mask", state)
        systems[f"ours-segments/{dtype}"] = Ours(dtype, seq, rows, "segments", state, force_segments=True)
        systems[f"ours-flex/{dtype}"] = Ours(dtype, seq, rows, "flex", state)
    for name, system in systems.items():  # warm-up, untimed: flex compiles here
        print(f"warm-up {name}: {timed(lambda system=system: system.forward_only(steps[0])):.1f} s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in systems}
    ratios: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(args.rounds):
        round_rate = {}
        for name, system in systems.items():
            seconds = sum(timed(lambda s=s, system=system: system.forward_only(s)) for s in steps)
            round_rate[name] = real * len(steps) / seconds
        for name, rate in round_rate.items():
            rates[name].append(rate)
            ratios[name].append(rate / round_rate[f"ours-mask/{name.split('/')[1]}"])
    print(f"{'system':32s} {'tokens/s (median)':>18s} {'vs ours-mask (median ratio)':>28s}")
    for name in systems:
        print(f"{name:32s} {statistics.median(rates[name]):18.0f} {statistics.median(ratios[name]):28.2f}")


def compare_threads(seq: int, args: argparse.Namespace) -> None:
    """Our bf16 step at 1 thread vs `args.threads` threads, alternating in one process."""
    rows = max(1, args.tokens_per_step // seq)
    steps = [packed_batches(seq, rows, 1, args.data, seed=s) for s in range(args.steps)]
    real = sum(int((s[0]["segment_ids"] > 0).sum()) for s in steps)
    cfg = train_config("fp32", seq, rows)
    ours = Ours("bf16", seq, rows, "segments", build.build_model(cfg.model, cfg.peft, vocab_size=VOCAB).state_dict())
    ours.step(steps[0])
    rates: dict[int, list[float]] = {1: [], args.threads: []}
    for _ in range(args.rounds):
        for n in rates:
            torch.set_num_threads(n)
            rates[n].append(real / sum(timed(lambda s=s: ours.step(s)) for s in steps))
    ratio = statistics.median(a / b for a, b in zip(rates[args.threads], rates[1], strict=True))
    print(f"seq {seq} {args.data}: tokens/s 1 thread {[round(r) for r in rates[1]]}, {args.threads} threads "
          f"{[round(r) for r in rates[args.threads]]}; median ratio {args.threads}/1 = {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-lengths", default="256,512,2048")
    parser.add_argument("--tokens-per-step", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--data", choices=("evol", "short", "pretrain"), default="evol")
    parser.add_argument("--model", choices=tuple(MODELS), default="small")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--compare-threads", action="store_true")
    parser.add_argument("--forward-only", action="store_true")
    args = parser.parse_args()
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    global MODEL_INIT
    MODEL_INIT = MODELS[args.model]
    torch.set_num_threads(args.threads)
    for seq in (int(x) for x in args.seq_lengths.split(",")):
        if args.compare_threads:
            compare_threads(seq, args)
        elif args.forward_only:
            run_forward_only(seq, args)
        else:
            run_length(seq, args)


if __name__ == "__main__":
    main()
