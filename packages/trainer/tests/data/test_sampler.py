"""Global sampler: weights per strategy (hand-computed), quotas, epoch permutations, reshuffle, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from mft_trainer.data.sampler import GlobalSampler, task_quotas, task_weights

SIZES = [40, 10, 0, 50]
NAMES = ["a", "b", "c", "d"]


def test_weights_per_strategy_hand_computed():
    assert np.allclose(task_weights(SIZES, "proportional"), [0.4, 0.1, 0.0, 0.5])
    assert np.allclose(task_weights(SIZES, "uniform"), [1 / 3, 1 / 3, 0.0, 1 / 3])
    t = np.array([40**0.5, 10**0.5, 0.0, 50**0.5])
    assert np.allclose(task_weights(SIZES, "temperature", temperature=2.0), t / t.sum())
    assert np.allclose(task_weights(SIZES, "temperature", temperature=1.0), [0.4, 0.1, 0.0, 0.5])
    assert np.allclose(task_weights(SIZES, {"a": 1, "b": 3}, task_names=NAMES), [0.25, 0.75, 0.0, 0.0])


def test_weights_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['zz'\]"):
        task_weights(SIZES, {"zz": 1.0}, task_names=NAMES)
    with pytest.raises(ValueError, match="sum to 0"):
        task_weights(SIZES, {"c": 1.0}, task_names=NAMES)  # c has no samples


def test_quotas_largest_remainder_sum_exactly():
    assert task_quotas(np.array([1 / 3, 1 / 3, 1 / 3]), 10).tolist() == [4, 3, 3]
    assert task_quotas(np.array([0.25, 0.75]), 7).tolist() == [2, 5]  # 1.75 -> 2, 5.25 -> 5


def _sampler(weights, seed=0, epoch_size=None):
    sizes = [6, 3, 11]
    offsets = [0, 6, 9]
    return GlobalSampler(offsets, sizes, weights, seed, epoch_size=epoch_size)


def test_proportional_epoch_is_a_permutation_reshuffled_each_epoch():
    s = _sampler(task_weights([6, 3, 11], "proportional"))
    e0, e1 = s.epoch_order(0), s.epoch_order(1)
    assert sorted(e0.tolist()) == list(range(20)) and sorted(e1.tolist()) == list(range(20))
    assert e0.tolist() != e1.tolist()
    assert np.array_equal(_sampler(s.weights).epoch_order(1), e1)  # same seed, same order
    assert not np.array_equal(_sampler(s.weights, seed=1).epoch_order(1), e1)


def test_uniform_upsamples_small_and_downsamples_large_tasks():
    s = _sampler(task_weights([6, 3, 11], "uniform"), epoch_size=30)
    order = s.epoch_order(0)
    task_of = np.searchsorted([0, 6, 9], order, side="right") - 1
    assert np.bincount(task_of).tolist() == [10, 10, 10]
    b = order[task_of == 1]  # 3 samples, quota 10: three full passes plus one
    assert sorted(np.bincount(b - 6).tolist()) == [3, 3, 4]
    c = order[task_of == 2]  # 11 samples, quota 10: distinct, different subset next epoch
    assert len(set(c.tolist())) == 10
    c1 = s.epoch_order(1)
    assert set(c.tolist()) != set(c1[(np.searchsorted([0, 6, 9], c1, side="right") - 1) == 2].tolist())
