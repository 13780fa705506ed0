"""Steps/s of the `token`, `task` and `coba` losses on the same tiny run, in one process, as ratios.

What it runs: a tiny llama built by mft_trainer.modeling (the trainer's own model seam and bf16 autocast where the CPU
has it), packed multi-task micro-batches following the micro-batch contract, and the StepLoss protocol of
mft_trainer.loop (begin_step, micro_loss + backward per micro-batch, end_step) plus the BalancingController that the
loop calls after each optimizer step. Only the loss mode changes between runs. Steps of the modes interleave one
by one (this machine is shared, so absolute times drift; ratios of neighbouring steps do not), and medians of
per-step times and per-step ratios are reported.

Goals (issue 5): `task` within 2% of `token`; `coba` within the cost of its extra validation forward, i.e.
    t(coba) - t(task)  <=  measured balancer-slice time per step.

    .venv/bin/python benchmarks/balancing_overhead.py [--steps 30] [--seq-length 256]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import typer
from mft_trainer.config.loss import LossConfig
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.loss.controller import BalancingController
from mft_trainer.model import build, forward, unwrap

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "packages" / "trainer" / "examples" / "tiny-tokenizer"
TASKS = ["code", "docs", "tests"]

app = typer.Typer(add_completion=False)


def packed_batch(gen: torch.Generator, rows: int, length: int, vocab: int, next_sample: list[int]) -> dict:
    """Rows packed with 2-6 segments of random lengths, each segment one task and one sample, tail padding."""
    keys = ("input_ids", "targets", "position_ids", "segment_ids", "task_ids", "sample_ids")
    out = {k: torch.zeros(rows, length, dtype=torch.long) for k in keys}
    out["targets"].fill_(-100)
    out["task_ids"].fill_(-1)
    out["sample_ids"].fill_(-1)
    for r in range(rows):
        pos, seg = 0, 0
        while pos < length - 16:
            n = int(torch.randint(16, max(17, length // 2), (1,), generator=gen))
            n = min(n, length - pos)
            seg += 1
            ids = torch.randint(3, vocab, (n,), generator=gen)
            prompt = n // 3
            sl = slice(pos, pos + n)
            out["input_ids"][r, sl] = ids
            tgt = torch.full((n,), -100, dtype=torch.long)
            tgt[prompt - 1 : n - 1] = ids[prompt:]
            out["targets"][r, sl] = tgt
            out["position_ids"][r, sl] = torch.arange(n)
            out["segment_ids"][r, sl] = seg
            out["task_ids"][r, sl] = int(torch.randint(0, len(TASKS), (1,), generator=gen))
            out["sample_ids"][r, sl] = next_sample[0]
            next_sample[0] += 1
            pos += n
    return out


class Run:
    """One mode's model, optimizer and controller; ``step()`` runs and times one optimizer step."""

    def __init__(self, mode: str, update_every: int, valid: list[dict], model_cfg: ModelConfig) -> None:
        torch.manual_seed(0)  # the same initial weights for every mode
        self.model = build.build_model(
            model_cfg, PeftSettings(method="full"), vocab_size=512, device="cpu"
        )
        self.attn = unwrap.hf_model(self.model).mft_attn_implementation
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        cfg = LossConfig.model_validate(
            {
                "mode": mode,
                "coba": {"warmup": 2, "history": 10, "update_every": update_every},
                "validation": {"slice": "valid", "slice_size": 4},
            }
        )
        self.ctl = BalancingController(
            cfg, TASKS, token_losses=self.fwd, valid_batches=valid, model=self.model
        )
        self.ctl.on_train_begin(0)
        self.model.train()
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.slice_times: list[float] = []

    def fwd(self, batch: dict) -> torch.Tensor:
        return forward.token_losses(self.model, batch, self.attn)[0]

    def step(self, step: int, micro: list[dict]) -> None:
        step_loss = self.ctl.step_loss
        slice_before = self.ctl.slice.seconds if self.ctl.slice is not None else 0.0
        start, cpu_start = time.perf_counter(), time.process_time()
        self.opt.zero_grad(set_to_none=True)
        step_loss.begin_step(micro)
        for mb in micro:
            step_loss.micro_loss(self.fwd(mb), mb).backward()
        self.opt.step()
        self.ctl.on_step_end(step, step_loss.end_step())
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)
        self.slice_times.append(
            (self.ctl.slice.seconds if self.ctl.slice is not None else 0.0) - slice_before
        )


@app.command()
def main(
    steps: int = typer.Option(30, help="timed optimizer steps per mode"),
    seq_length: int = typer.Option(256),
    micro_batch_size: int = typer.Option(4),
    grad_accum: int = typer.Option(2),
    valid_batches: int = typer.Option(2, help="micro-batches in CoBa's cached slice"),
    threads: int = typer.Option(
        1, help="torch threads; 1 makes the process CPU clock a faithful compute measure"
    ),
    clock: str = typer.Option("cpu", help="cpu (process CPU time: robust on a shared machine) or wall"),
) -> None:
    if clock not in ("cpu", "wall"):
        raise typer.BadParameter("--clock must be cpu or wall")
    torch.set_num_threads(threads)
    model_cfg = ModelConfig.model_validate(
        {
            "init": {
                "architecture": "llama",
                "hidden_size": 128,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "intermediate_size": 384,
                "max_position_embeddings": max(1024, seq_length),
            },
            "tokenizer": str(TOKENIZER),
            "attn_implementation": "sdpa",
        }
    )
    gen = torch.Generator().manual_seed(0)
    counter = [0]
    data = [
        [packed_batch(gen, micro_batch_size, seq_length, 512, counter) for _ in range(grad_accum)]
        for _ in range(steps)
    ]
    valid = [packed_batch(gen, micro_batch_size, seq_length, 512, counter) for _ in range(valid_batches)]
    modes = {"token": ("token", 1), "task": ("task", 1), "coba": ("coba", 1), "coba/10": ("coba", 10)}
    runs = {name: Run(mode, every, valid, model_cfg) for name, (mode, every) in modes.items()}
    names = list(runs)
    # Interleave at the finest grain: every optimizer step runs once per mode, in a rotating order, so load from
    # other processes hits all modes alike; the first 2 steps (allocations, kernel choice) are not counted.
    for step in range(1, steps + 3):
        order = names[step % len(names) :] + names[: step % len(names)]
        for name in order:
            runs[name].step(step, data[(step - 1) % len(data)])
        if step % 10 == 0:
            typer.echo(f"step {step}/{steps + 2}")

    # The cost of one pass over the balancer slice, measured alone on the coba model (same clock as the steps).
    coba = runs["coba"]
    slice_costs = []
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        coba.ctl.slice.evaluate(coba.fwd, model=coba.model)
        slice_costs.append({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu})

    def times(name: str) -> list[float]:
        return (runs[name].cpu_times if clock == "cpu" else runs[name].times)[2:]

    def ratio(name: str, base: str = "token") -> float:
        return statistics.median(a / b for a, b in zip(times(name), times(base), strict=True))

    slice_cost = statistics.median(c[clock] for c in slice_costs)
    typer.echo(
        f"\ntiny llama 128x4 (sdpa, trainer's model seam), packed seq {seq_length}, micro-batch {micro_batch_size} "
        f"x accum {grad_accum}, {steps} timed steps per mode interleaved, {threads} thread(s), clock: {clock} "
        f"time of this process; balancer slice {valid_batches} micro-batches, one pass {slice_cost:.4f}s"
    )
    typer.echo(f"{'mode':<9}{'s/step':>9}{'steps/s':>9}{'step time / token':>19}")
    for name in names:
        per_step = statistics.median(times(name))
        typer.echo(f"{name:<9}{per_step:>9.4f}{1 / per_step:>9.3f}{ratio(name):>19.4f}")
    typer.echo(
        f"\ntask overhead vs token (median of per-step ratios): {(ratio('task') - 1) * 100:+.2f}% (goal: within 2%)"
    )
    for name, every in (("coba", 1), ("coba/10", 10)):
        extra = statistics.mean(a - b for a, b in zip(times(name), times("task"), strict=True))
        budget = slice_cost / every
        typer.echo(
            f"{name}: extra time per step vs task {extra:+.4f}s (mean); its slice forward per step {budget:.4f}s; "
            f"extra beyond the slice forward {extra - budget:+.4f}s"
        )


if __name__ == "__main__":
    app()
