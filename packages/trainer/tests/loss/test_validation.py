"""Per-task validation: token-weighted over the whole split (1 and 2 ranks), balancer slice selection and cost."""

from __future__ import annotations

import math

import pytest
import torch
from loss_testkit import TinyLM, duplicate_first_row, make_rows, split_rows, two_rank_results
from mft_trainer.loss.validation import BalancerSlice, evaluate_per_task, split_validation


def pooled_reference(model, batches, num_tasks=3):
    losses, tasks = [], []
    with torch.no_grad():
        for b in batches:
            mask = b["targets"] != -100
            losses.append(model.token_losses(b)[mask])
            tasks.append(b["task_ids"][mask])
    losses, tasks = torch.cat(losses), torch.cat(tasks)
    per_task = torch.tensor(
        [losses[tasks == k].mean().item() if (tasks == k).any() else math.nan for k in range(num_tasks)],
        dtype=torch.float64,
    )
    return per_task, losses.mean().item()


def test_validation_is_token_weighted_over_the_whole_split_not_a_mean_of_batch_means():
    batch = make_rows(num_rows=8, seed=21)
    model = TinyLM()
    batches = [split_rows(batch, [0]), split_rows(batch, [1, 2, 3, 4, 5]), split_rows(batch, [6, 7])]
    result = evaluate_per_task(model.token_losses, batches, 3)
    per_task, total = pooled_reference(model, batches)
    torch.testing.assert_close(result.per_task_loss, per_task, equal_nan=True)
    assert result.loss == pytest.approx(total, rel=1e-12)
    assert result.tokens == int(sum((b["targets"] != -100).sum() for b in batches))
    batch_means = [evaluate_per_task(model.token_losses, [b], 3).loss for b in batches]
    assert sum(batch_means) / len(batch_means) != pytest.approx(result.loss, rel=1e-6)
    assert result.metric("total", ["a", "b", "c"]) == result.loss
    assert result.metric("b", ["a", "b", "c"]) == pytest.approx(float(per_task[1]))
    with pytest.raises(ValueError, match="unknown validation metric"):
        result.metric("zzz", ["a", "b", "c"])


def test_validation_restores_train_mode_and_accepts_tuple_returns():
    model = TinyLM()
    model.train()
    batch = make_rows(num_rows=2, seed=1)
    seen = []

    def fwd(b):
        seen.append(model.training)
        return model.token_losses(b), None

    evaluate_per_task(fwd, [batch], 3, model=model)
    assert seen == [False] and model.training


def test_absent_task_is_nan():
    batch = make_rows(num_rows=4, seed=2)
    batch["task_ids"] = torch.where(
        batch["task_ids"] >= 0, torch.zeros_like(batch["task_ids"]), batch["task_ids"]
    )
    result = evaluate_per_task(TinyLM().token_losses, [batch], 3)
    assert math.isnan(result.per_task_loss[1]) and result.per_task_tokens[1] == 0


@pytest.mark.distributed
def test_validation_over_two_gloo_ranks_equals_one_process():
    """Ranks hold 3 and 5 one-row batches: the shorter rank runs masked fillers, the sums are all-reduced."""
    got = two_rank_results()["validation"]
    batch = make_rows(num_rows=8, seed=3)
    duplicate_first_row(batch)
    model = TinyLM()
    per_task, total = pooled_reference(model, [batch])
    torch.testing.assert_close(got["per_task_loss"], per_task, equal_nan=True)
    assert got["loss"] == pytest.approx(total, rel=1e-12)


def valid_split(n=12, seed=30):
    batch = make_rows(num_rows=n, seed=seed)
    return [split_rows(batch, [i]) for i in range(n)]


def supervised_ids(batches):
    return sorted(int(s) for b in batches for s in b["sample_ids"][b["targets"] != -100].tolist())


def test_separate_slice_is_disjoint_from_early_stopping_set_and_covers_every_task():
    batch = make_rows(num_rows=12, seed=30)
    batches = [
        split_rows(batch, [i, i + 1, i + 2]) for i in range(0, 12, 3)
    ]  # packed: several tasks per batch
    bal, rest = split_validation(batches, 3, slice_mode="separate", samples_per_task=2)
    assert bal and rest
    # Every validation sample lands in exactly one of the two sets, whole (all its supervised tokens).
    assert sorted(supervised_ids(bal) + supervised_ids(rest)) == supervised_ids(batches)
    assert not set(supervised_ids(bal)) & set(supervised_ids(rest))
    per_task = {}
    for b in bal:
        mask = b["targets"] != -100
        for t, s in zip(b["task_ids"][mask].tolist(), b["sample_ids"][mask].tolist(), strict=True):
            per_task.setdefault(t, set()).add(s)
    assert {k: len(v) for k, v in per_task.items()} == {0: 2, 1: 2, 2: 2}
    # A sample's loss is the same in its slice copy as in the full batch (other targets are only masked).
    model = TinyLM()
    full = evaluate_per_task(model.token_losses, batches, 3)
    parts = [evaluate_per_task(model.token_losses, part, 3) for part in (bal, rest)]
    assert parts[0].tokens + parts[1].tokens == full.tokens
    pooled = (parts[0].loss * parts[0].tokens + parts[1].loss * parts[1].tokens) / full.tokens
    assert pooled == pytest.approx(full.loss, rel=1e-12)
    bal2, everything = split_validation(batches, 3, slice_mode="valid", samples_per_task=2)
    assert len(everything) == len(batches) and set(supervised_ids(bal2)) <= set(supervised_ids(everything))


def test_separate_slice_too_small_fails_clearly():
    batch = make_rows(num_rows=1, seed=4)
    first = batch["segment_ids"] == 1
    for key in ("targets", "task_ids", "sample_ids"):  # keep one sample only
        batch[key] = torch.where(
            first, batch[key], torch.full_like(batch[key], -100 if key == "targets" else -1)
        )
    with pytest.raises(ValueError, match="too small"):
        split_validation([batch], 3, slice_mode="separate", samples_per_task=1)
    with pytest.raises(ValueError, match="slice must be"):
        split_validation([batch], 3, slice_mode="train", samples_per_task=1)


def test_balancer_slice_cycles_and_measures_its_cost():
    batches = valid_split(n=5)
    model = TinyLM()
    sl = BalancerSlice(batches, 3, valid_batches=2)
    first = sl.evaluate(model.token_losses)
    second = sl.evaluate(model.token_losses)
    ref_first = evaluate_per_task(model.token_losses, batches[:2], 3)
    ref_second = evaluate_per_task(model.token_losses, batches[2:4], 3)
    assert first.loss == pytest.approx(ref_first.loss) and second.loss == pytest.approx(ref_second.loss)
    assert sl.calls == 2 and sl.seconds > 0
    state = sl.state_dict()
    resumed = BalancerSlice(batches, 3, valid_batches=2)
    resumed.load_state_dict(state)
    assert [id(b) for b in resumed.next_batches()] == [id(batches[4]), id(batches[0])]


def test_periodic_validation_leaves_the_training_trajectory_unchanged(tmp_path, dataset):
    """eval_every only adds no-grad passes over fixed batches and best/ checkpoints: every step's losses and the
    final weights are bit-identical with and without it (the demo validates every 200 steps for its plots)."""
    from mft_trainer.loop import run_training
    from mft_trainer.metrics_log import read_metrics
    from safetensors.torch import load_file
    from trainer_testkit import tiny_config

    runs = {}
    for every in (0, 2):
        root = tmp_path / f"every-{every}"
        cfg = tiny_config(root, dataset, max_steps=6, eval_every=every, schedule__warmup_steps=2)
        final = run_training(cfg, progress=False)
        steps = [r for r in read_metrics(cfg.output_dir / "metrics.jsonl") if "lr" in r]
        runs[every] = ([{k: v for k, v in r.items() if k.startswith(("loss", "train_loss/", "grad_norm"))}
                        for r in steps], load_file(final / "model.safetensors"))
        validated = [r for r in read_metrics(cfg.output_dir / "metrics.jsonl") if "valid_loss" in r]
        assert len(validated) == (3 if every else 1)
    assert runs[0][0] == runs[2][0]
    assert runs[0][1].keys() == runs[2][1].keys()
    assert all(torch.equal(runs[0][1][k], runs[2][1][k]) for k in runs[0][1])
