"""Training throughput: mft-train packed vs mft-train padded vs TRL SFTTrainer (its best packing: BFD).

Same tiny llama, same tokenizer, same synthetic Evol-like data (conversation lengths log-normal, median ~350
tokens, long tail), same non-pad token budget, same threads. Each trial runs in its own process (so peak RSS is
per system), and the trials are interleaved round-robin because the machine is shared: compare the RATIOS.

    .venv/bin/python benchmarks/train_speed.py [--seq-length 2048] [--tokens 60000] [--rounds 2]

Timed: optimizer steps only (forward, backward, clip, AdamW), after one untimed warm-up step; tokenization and model
construction are excluded for every system. Non-pad tokens/s = real tokens fed to the model / timed seconds.
TRL's BFD packing on CPU relies on position ids alone (padding-free) which, with sdpa, does NOT isolate the packed
samples (docs/reference.md §7): it is measured for speed only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "packages" / "trainer" / "examples" / "tiny-tokenizer"
MODEL_INIT = {"architecture": "llama", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 384, "max_position_embeddings": 4096,
              "tie_word_embeddings": False}
WORDS = ("def return value index items result count total self for in range if else while list dict str int "
         "import from class the a of to and is with data parse tokens line file path open read write").split()


# ---------------------------------------------------------------------------------------------------- data
def evol_like_conversations(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """User + assistant turns whose total length is log-normal like Evol-instruction-66k (median ~350 tokens)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = min(int(rng.lognormvariate(5.4, 0.75)), 2400)  # ~1.3 tokens per word with the tiny BPE
        split = max(8, int(words * rng.uniform(0.15, 0.4)))
        user = " ".join(rng.choice(WORDS) for _ in range(split))
        answer = " ".join(rng.choice(WORDS) for _ in range(max(4, words - split)))
        out.append([{"role": "user", "content": user}, {"role": "assistant", "content": answer}])
    return out


def write_dataset(root: Path, n: int) -> Path:
    sys.path.insert(0, str(REPO / "packages" / "trainer" / "tests"))
    from fixtures import write_prepared_dataset

    convs = evol_like_conversations(n)
    return write_prepared_dataset(root, tasks={}, records={"evol": convs}, valid_per_task=2)


# ---------------------------------------------------------------------------------------------------- workers
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mft(args: argparse.Namespace, packing: bool) -> dict:
    import torch
    from mft_trainer.config import TrainConfig
    from mft_trainer.data import stream as data_mod
    from mft_trainer.distributed import DistEnv, wrap_model
    from mft_trainer.loop import forward_backward
    from mft_trainer.loss.step import StepLoss
    from mft_trainer.model import build, unwrap

    cfg = TrainConfig.from_dict({
        "model": {"init": MODEL_INIT, "tokenizer": str(TOKENIZER), "dtype": args.dtype, "attn_implementation": "sdpa"},
        "peft": {"method": "full"},
        "data": {"path": args.data, "num_workers": 0, "cache_dir": args.cache, "overlong": "truncate"},
        "output_dir": args.work, "packing": packing, "seq_length": args.seq_length,
        "micro_batch_size": 1 if packing else args.padded_batch, "grad_accum": 1, "max_steps": 100000,
        "loss": {"mode": "token"}, "optimizer": {"lr": 1e-3},
    })
    tokenizer = build.load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = build.build_model(cfg.model, cfg.peft, vocab_size=len(tokenizer))
    attn = unwrap.hf_model(model).mft_attn_implementation
    backend = wrap_model(model, cfg, DistEnv("none", 0, 1, 0, torch.device("cpu")))
    stream = data_mod.build_train_stream(
        cfg.data, cfg.template, tokenizer, seq_length=cfg.seq_length, packing=packing,
        micro_batch_size=cfg.micro_batch_size, grad_accum=1, rank=0, world_size=1, seed=0)
    step_loss = StepLoss("token", 1)
    tokens = slots = 0
    seconds = 0.0
    steps = -1  # the first step is an untimed warm-up
    while tokens < args.tokens:
        micro = stream.next_step()
        start = time.perf_counter()
        forward_backward(backend, step_loss, micro, attn, 1)
        backend.step(1.0)
        step_loss.end_step()
        elapsed = time.perf_counter() - start
        steps += 1
        if steps == 0:
            continue
        seconds += elapsed
        tokens += sum(int((mb["segment_ids"] > 0).sum()) for mb in micro)
        slots += sum(mb["segment_ids"].numel() for mb in micro)
    return {"tokens": tokens, "slots": slots, "seconds": seconds, "steps": steps}


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from mft_trainer.config.model import ModelConfig, PeftSettings
    from mft_trainer.data.dataset import open_prepared
    from mft_trainer.data.template import TemplateConfig, to_chat_template
    from mft_trainer.model import build, unwrap
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    tokenizer.chat_template = to_chat_template(TemplateConfig())  # the same MFTCoder template text
    rows = [{"messages": r["messages"]} for r in open_prepared(args.data).records("train")]
    dataset = Dataset.from_list(rows)
    torch.manual_seed(0)
    model_cfg = ModelConfig(init=MODEL_INIT, tokenizer=str(TOKENIZER), dtype=args.dtype, attn_implementation="sdpa")
    model = unwrap.hf_model(build.build_model(model_cfg, PeftSettings(method="full"), vocab_size=len(tokenizer)))
    pad_id = tokenizer.pad_token_id
    counter = {"tokens": 0, "slots": 0, "seconds": 0.0, "steps": -1, "start": 0.0}

    def count(_module, _args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and counter["steps"] >= 0:
            counter["tokens"] += int((ids != pad_id).sum())
            counter["slots"] += int(ids.numel())

    model.register_forward_pre_hook(count, with_kwargs=True)

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            counter["start"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if counter["steps"] >= 0:
                counter["seconds"] += time.perf_counter() - counter["start"]
            counter["steps"] += 1
            if counter["tokens"] >= args.tokens:
                control.should_training_stop = True

    config = SFTConfig(
        output_dir=str(Path(args.work) / "trl"), max_length=args.seq_length, packing=True, packing_strategy="bfd",
        per_device_train_batch_size=1, gradient_accumulation_steps=1, learning_rate=1e-3, max_steps=100000,
        use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no", bf16=args.dtype == "bf16",
        dataloader_num_workers=0, max_grad_norm=1.0, seed=0, dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[Timer()])
    trainer.train()
    return {k: counter[k] for k in ("tokens", "slots", "seconds", "steps")}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.system == "trl":
        result = run_trl(args)
    else:
        result = run_mft(args, packing=args.system == "mft-packed")
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------- driver
SYSTEMS = ("mft-packed", "mft-padded", "trl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=60_000, help="non-pad tokens per trial")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--padded-batch", type=int, default=4, help="rows per padded micro-batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=MODEL_INIT["hidden_size"])
    parser.add_argument("--layers", type=int, default=MODEL_INIT["num_hidden_layers"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    MODEL_INIT.update(hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                      intermediate_size=3 * args.hidden_size)
    if args.system:
        worker(args)
        return

    work = Path(tempfile.mkdtemp(prefix="mft-train-speed-"))
    data = write_dataset(work / "prepared", args.samples)
    systems = args.systems.split(",")
    results: dict[str, list[dict]] = {s: [] for s in systems}
    base = [sys.executable, __file__, "--seq-length", str(args.seq_length), "--tokens", str(args.tokens),
            "--padded-batch", str(args.padded_batch), "--threads", str(args.threads), "--dtype", args.dtype,
            "--hidden-size", str(args.hidden_size), "--layers", str(args.layers),
            "--data", str(data), "--cache", str(work / "cache"), "--work", str(work / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    for r in range(args.rounds):
        order = systems[r % len(systems):] + systems[: r % len(systems)]  # rotate who goes first
        for system in order:
            proc = subprocess.run([*base, "--system", system], capture_output=True, text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{system} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
            res = json.loads(line[len("RESULT "):])
            results[system].append(res)
            print(f"round {r + 1} {system:11s} {res['tokens'] / res['seconds']:8.0f} tok/s  "
                  f"pad {1 - res['tokens'] / res['slots']:6.2%}  steps {res['steps']}  rss {res['peak_rss_mb']:.0f} MB",
                  flush=True)

    summary = {}
    for system, runs in results.items():
        tokens = sum(x["tokens"] for x in runs)
        summary[system] = {
            "tokens_per_s": tokens / sum(x["seconds"] for x in runs),
            "pad_fraction": 1 - tokens / sum(x["slots"] for x in runs),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
        }
    print(f"\nseq_length {args.seq_length}, {args.tokens} non-pad tokens per trial, {args.rounds} rounds, "
          f"{args.threads} threads, {args.dtype}, llama hidden {args.hidden_size} x {args.layers} layers")
    print(f"{'system':12s} {'tok/s':>9s} {'pad':>8s} {'peak RSS':>9s}")
    for system, s in summary.items():
        print(f"{system:12s} {s['tokens_per_s']:9.0f} {s['pad_fraction']:8.2%} {s['peak_rss_mb']:7.0f} MB")
    if "mft-packed" in summary:
        for other in ("trl", "mft-padded"):
            if other in summary:
                ratio = summary["mft-packed"]["tokens_per_s"] / summary[other]["tokens_per_s"]
                print(f"mft-packed / {other}: {ratio:.2f}x")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
