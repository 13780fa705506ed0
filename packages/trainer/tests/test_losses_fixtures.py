"""Shared helpers (no tests) for the BALANCE tests: synthetic packed optimizer steps and a tiny differentiable model."""

from __future__ import annotations

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
