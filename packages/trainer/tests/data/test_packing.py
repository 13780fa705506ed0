"""Packing: BFD against hand-computed bins, collation golden values, the block mask, packed == unpacked on real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mft_trainer.data.packing import (
    best_fit_decreasing,
    block_causal_mask,
    collate_rows,
    make_segment,
)
from trainer_testkit import tiny_model


def test_bfd_hand_computed():
    # capacity 10, items (index: length) 0:5 1:7 2:5 3:2 4:4 5:3 6:8 7:1
    # decreasing: 6(8) 1(7) 0(5) 2(5) 4(4) 5(3) 3(2) 7(1)
    # 6 -> bin0 (room 2); 1 -> bin1 (room 3); 0 -> bin2 (room 5); 2 -> bin2 (room 0); 4 -> bin3 (room 6);
    # 5 -> best fit: bin1 (room 3 -> 0); 3 -> bin0 (room 2 -> 0); 7 -> bin3 (room 6 -> 5)
    assert best_fit_decreasing([5, 7, 5, 2, 4, 3, 8, 1], 10) == [[6, 3], [1, 5], [0, 2], [4, 7]]


def test_bfd_prefers_tightest_bin_and_breaks_ties_by_index():
    # capacity 10, lengths 0:1 1:1 2:3 3:6 4:8; decreasing (ties by index): 4 3 2 0 1
    # 4 -> bin0 (room 2); 3 -> bin1 (room 4); 2 -> only bin1 fits (room 1);
    # 0 -> rooms bin0 2, bin1 1: tightest is bin1 (room 0)  (first-fit would pick bin0 here); 1 -> bin0 (room 1)
    assert best_fit_decreasing([1, 1, 3, 6, 8], 10) == [[4, 1], [3, 2, 0]]
    # equal rooms: the bin opened first wins
    assert best_fit_decreasing([6, 6, 4], 10) == [[0, 2], [1]]
    assert best_fit_decreasing([], 10) == []
    with pytest.raises(ValueError, match="item 1 has length 11"):
        best_fit_decreasing([3, 11], 10)


def test_bfd_is_a_partition_and_respects_capacity():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=500)
    bins = best_fit_decreasing(lengths, 256)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(lengths[b].sum() <= 256 for b in bins)
    assert len(bins) <= int(np.ceil(lengths.sum() / 256 * 11 / 9)) + 1  # BFD's 11/9 OPT + 6/9 bound


def test_collate_matches_the_docstring_drawing():
    # A = [10, 11, 12] (prompt, prompt, answer), B = [20, 21] (prompt, answer), C = [30, 31]
    rows = [
        [
            make_segment(np.array([10, 11, 12]), np.array([0, 0, 1]), task_id=0, sample_id=5),
            make_segment(np.array([20, 21]), np.array([0, 1]), task_id=1, sample_id=7),
            make_segment(np.array([30, 31]), np.array([0, 1]), task_id=2, sample_id=9),
        ]
    ]
    b = collate_rows(rows, pad_id=99, length=8)
    assert b["input_ids"].tolist() == [[10, 11, 12, 20, 21, 30, 31, 99]]
    assert b["targets"].tolist() == [[-100, 12, -100, 21, -100, 31, -100, -100]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 0]]
    assert b["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 3, 3, 0]]
    assert b["task_ids"].tolist() == [[0, 0, 0, 1, 1, 2, 2, -1]]
    assert b["sample_ids"].tolist() == [[5, 5, 5, 7, 7, 9, 9, -1]]
    assert all(t.dtype == torch.int64 for t in b.values())
    assert float((b["segment_ids"] == 0).float().mean()) == 1 / 8
    allowed = block_causal_mask(b["segment_ids"], torch.float32)[0, 0] == 0
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)


def test_mask_uses_dtype_min_and_dynamic_width_is_multiple_of_8():
    rows = [[make_segment(np.arange(1, 4), np.ones(3), 0, 0)], [make_segment(np.arange(1, 12), np.ones(11), 0, 1)]]
    b = collate_rows(rows, pad_id=0)
    assert b["input_ids"].shape == (2, 16)
    m = block_causal_mask(b["segment_ids"], torch.bfloat16)
    assert m.shape == (2, 1, 16, 16) and m.dtype == torch.bfloat16
    assert set(m.unique().tolist()) == {0.0, torch.finfo(torch.bfloat16).min}


def _random_samples(vocab: int, lengths: list[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(3, vocab, size=n)
        mask = np.zeros(n, dtype=bool)
        mask[n // 3 :] = True
        out.append((ids, mask))
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_unpacked_logits_and_loss(arch, attn):
    """Samples packed in rows with the block mask give the same per-sample logits and losses as run alone."""
    torch.manual_seed(0)
    model = tiny_model(arch, vocab_size=128, attn_implementation=attn)
    samples = _random_samples(128, [13, 7, 21, 5, 9, 30])
    bins = best_fit_decreasing([len(s[0]) for s in samples], 40)
    assert len(bins) < len(samples)
    rows = [[make_segment(samples[i][0], samples[i][1], task_id=i % 2, sample_id=i) for i in b] for b in bins]
    batch = collate_rows(rows, pad_id=0)
    mask = block_causal_mask(batch["segment_ids"], torch.float32)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"]).logits
        token_loss = F.cross_entropy(packed.transpose(1, 2), batch["targets"], ignore_index=-100, reduction="none")
        for i, (ids, smask) in enumerate(samples):
            alone = model(input_ids=torch.as_tensor(ids)[None]).logits[0]
            where = batch["sample_ids"] == i
            assert torch.allclose(packed[where], alone, atol=2e-5), (arch, attn, i)
            targets = torch.full((len(ids),), -100)
            targets[:-1] = torch.where(torch.as_tensor(smask[1:]), torch.as_tensor(ids[1:]), -100)
            ref = F.cross_entropy(alone, targets, ignore_index=-100, reduction="sum")
            assert torch.allclose(token_loss[where].sum(), ref, atol=1e-4)


def test_position_ids_alone_do_not_isolate():
    """Guard that the equivalence test can fail: without the block mask, packed logits differ."""
    model = tiny_model("llama", vocab_size=128, attn_implementation="sdpa")
    samples = _random_samples(128, [10, 10], seed=1)
    batch = collate_rows([[make_segment(s[0], s[1], 0, i) for i, s in enumerate(samples)]], pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        alone = model(input_ids=torch.as_tensor(samples[1][0])[None]).logits[0]
    assert not torch.allclose(packed[batch["sample_ids"] == 1], alone, atol=1e-3)


def test_docstring_examples_hold() -> None:
    import doctest

    from mft_trainer.data import packing

    assert doctest.testmod(packing).failed == 0
