"""Shared helpers (no tests) for the BALANCE tests: synthetic packed optimizer steps and a tiny differentiable model."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

IGNORE = -100


def make_rows(
    num_rows: int = 8, length: int = 16, num_tasks: int = 3, vocab: int = 13, seed: int = 0
) -> dict[str, torch.Tensor]:
    """``num_rows`` packed rows following the micro-batch contract (1-3 segments per row, tail padding).

    Rows differ a lot in supervised token count and tasks, so a per-micro-batch mean would differ from the global one.
    """
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(num_rows, length, dtype=torch.long)
    targets = torch.full((num_rows, length), IGNORE, dtype=torch.long)
    task_ids = torch.full((num_rows, length), -1, dtype=torch.long)
    sample_ids = torch.full((num_rows, length), -1, dtype=torch.long)
    segment_ids = torch.zeros(num_rows, length, dtype=torch.long)
    position_ids = torch.zeros(num_rows, length, dtype=torch.long)
    next_sample = 100
    for r in range(num_rows):
        pos = 0
        seg = 0
        num_segments = int(torch.randint(1, 4, (1,), generator=gen))
        for _ in range(num_segments):
            seg_len = int(torch.randint(3, 8, (1,), generator=gen))
            if pos + seg_len > length:
                break
            seg += 1
            ids = torch.randint(1, vocab, (seg_len,), generator=gen)
            input_ids[r, pos : pos + seg_len] = ids
            prompt = int(torch.randint(1, seg_len - 1, (1,), generator=gen))
            # targets[t] = ids[t+1] when t+1 is supervised (after the prompt); last position of a segment -100.
            for t in range(seg_len - 1):
                if t + 1 >= prompt:
                    targets[r, pos + t] = ids[t + 1]
            task_ids[r, pos : pos + seg_len] = int(torch.randint(0, num_tasks, (1,), generator=gen))
            sample_ids[r, pos : pos + seg_len] = next_sample
            segment_ids[r, pos : pos + seg_len] = seg
            position_ids[r, pos : pos + seg_len] = torch.arange(seg_len)
            next_sample += 1
            pos += seg_len
    return {
        "input_ids": input_ids,
        "targets": targets,
        "task_ids": task_ids,
        "sample_ids": sample_ids,
        "segment_ids": segment_ids,
        "position_ids": position_ids,
    }


def split_rows(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in batch.items()}


class TinyLM(torch.nn.Module):
    """Embedding -> tanh -> linear; per-token cross-entropy with 0 where targets == -100 (the model seam's contract)."""

    def __init__(self, vocab: int = 13, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(vocab, hidden, dtype=torch.float64)
        self.out = torch.nn.Linear(hidden, vocab, dtype=torch.float64)

    def token_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.out(torch.tanh(self.emb(batch["input_ids"])))
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            batch["targets"].reshape(-1),
            ignore_index=IGNORE,
            reduction="none",
        )
        return loss.reshape(batch["targets"].shape)


def flat(batch: dict[str, torch.Tensor], token_loss: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The 1-D views multitask_loss takes."""
    mask = batch["targets"] != IGNORE
    return (
        token_loss.reshape(-1),
        mask.reshape(-1),
        batch["task_ids"].reshape(-1),
        batch["sample_ids"].reshape(-1),
    )


MODE_KWARGS = {
    "token": {},
    "sample": {},
    "task": {"task_weights": [1.0, 2.5, 0.5]},
    "task_sample": {"task_weights": [1.0, 2.5, 0.5]},
    "focal_sample": {"task_weights": [1.0, 2.5, 0.5], "alpha": [0.25, 1.0, 2.0], "gamma": 2.0},
    "focal_task": {"task_weights": [1.0, 2.5, 0.5], "alpha": [0.25, 1.0, 2.0], "gamma": 2.0},
    "famo": {"task_weights": [1.0, 2.5, 0.5]},
}


def run_step(model: TinyLM, micro_batches, mode: str, step_loss=None):
    """The loop's protocol over one rank's micro-batches; returns the end_step result and the summed micro losses."""
    from mft_trainer.loss.step import StepLoss

    step_loss = step_loss or StepLoss(mode, 3, **MODE_KWARGS[mode])
    model.zero_grad()
    step_loss.begin_step(micro_batches)
    if step_loss.needs_probe:
        with torch.no_grad():
            for mb in micro_batches:
                step_loss.probe(model.token_losses(mb), mb)
        step_loss.finish_probe()
    total = 0.0
    for mb in micro_batches:
        loss = step_loss.micro_loss(model.token_losses(mb), mb)
        loss.backward()
        total += float(loss.detach())
    return step_loss.end_step(), total


def distributed_worker(
    rank: int, world: int, init_file: str, rows_of_rank: list[list[int]], out_file: str
) -> None:
    """One gloo rank: run every mode on its rows (two micro-batches), sum gradients over ranks, rank 0 saves."""
    import torch.distributed as dist
    from mft_trainer.loss.modes import COMBINE_MODES

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        batch = make_rows(num_rows=8, seed=3)
        duplicate_first_row(batch)
        rows = rows_of_rank[rank]
        half = (len(rows) + 1) // 2
        micro = [split_rows(batch, rows[:half]), split_rows(batch, rows[half:])]
        model = TinyLM()
        results = {}
        for mode in COMBINE_MODES:
            result, total = run_step(model, micro, mode)
            grads = [p.grad.clone() for p in model.parameters()]
            for g in grads:
                dist.all_reduce(g)  # the loss is a global SUM over ranks: sum, not average, the gradients
            summed = torch.tensor([total], dtype=torch.float64)
            dist.all_reduce(summed)
            results[mode] = {
                "loss": result.loss,
                "sum_micro": float(summed),
                "grads": grads,
                "per_task": result.per_task_loss,
            }
        from mft_trainer.loss.validation import evaluate_per_task

        # One batch per row: the ranks hold 3 and 5 batches, so the shorter one runs masked fillers.
        valid = evaluate_per_task(model.token_losses, [split_rows(batch, [r]) for r in rows], 3)
        results["validation"] = {"per_task_loss": valid.per_task_loss, "loss": valid.loss}
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


def duplicate_first_row(batch: dict[str, torch.Tensor]) -> None:
    """Make row 7 a copy of row 0 (same sample ids): a sample drawn twice in one step, split across ranks."""
    for value in batch.values():
        value[7] = value[0]


def step_micro_batches(step: int, grad_accum: int = 2, rows: int = 4) -> list[dict[str, torch.Tensor]]:
    """The micro-batches of optimizer step ``step``: deterministic in the step, so a resumed run sees the same."""
    batch = make_rows(num_rows=rows * grad_accum, seed=1000 + step)
    return [split_rows(batch, list(range(i * rows, (i + 1) * rows))) for i in range(grad_accum)]


def train_steps(controller, model, optimizer, steps, reports: list) -> None:
    """A minimal training loop that follows the StepLoss protocol and calls the controller after every step."""
    step_loss = controller.step_loss
    for step in steps:
        micro = step_micro_batches(step)
        optimizer.zero_grad()
        step_loss.begin_step(micro)
        if step_loss.needs_probe:
            with torch.no_grad():
                for mb in micro:
                    step_loss.probe(model.token_losses(mb), mb)
            step_loss.finish_probe()
        for mb in micro:
            step_loss.micro_loss(model.token_losses(mb), mb).backward()
        optimizer.step()
        reports.append(controller.on_step_end(step, step_loss.end_step()))


RANK_ROWS = [[0, 1, 2], [3, 4, 5, 6, 7]]


@functools.cache
def two_rank_results() -> dict:
    """Run :func:`distributed_worker` on 2 gloo processes once per test session; rank 0's results."""
    import tempfile

    import torch.multiprocessing as mp

    tmp = Path(tempfile.mkdtemp(prefix="mft-balance-gloo-"))
    out = tmp / "rank0.pt"
    mp.spawn(distributed_worker, args=(2, str(tmp / "init"), RANK_ROWS, str(out)), nprocs=2, join=True)
    return torch.load(out)
