"""One global sampler over all tasks: per-task weights, a fresh order every epoch from the seed, no rank sharding here.

The sampler decides WHICH samples an epoch holds and in what order; it is a pure function of (seed, epoch), so any
step can be recomputed on resume and every rank computes the same order (ranks then take disjoint rows of each step,
see data.py). Weights set each task's share of an epoch of `epoch_size` samples (default: the whole split):

- proportional: w_k = n_k, so an epoch is a permutation of all samples (each sample exactly once);
- uniform: w_k = 1;  temperature T: w_k = n_k^(1/T) (T=1 is proportional, large T tends to uniform);
- explicit: relative numbers per task name (0 leaves a task out).

Task k gets q_k = epoch_size * w_k / sum(w) samples (largest remainder rounding). Within a task, q_k >= n_k repeats full
permutations and then a partial one (upsampling); q_k < n_k takes a fresh random subset each epoch (downsampling).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def task_weights(
    task_sizes: Sequence[int],
    strategy: str | Mapping[str, float],
    *,
    task_names: Sequence[str] | None = None,
    temperature: float = 2.0,
) -> np.ndarray:
    """Normalised sampling weights per task (in task order): each task's share of an epoch.

    Args:
        task_sizes: samples per task.
        strategy: `proportional` (to size), `uniform` (every non-empty task alike), `temperature` (n_k^(1/T)), or
            explicit relative weights by task name (missing tasks 0).
        task_names: needed for explicit weights.
        temperature: T for `temperature`.

    Returns:
        Weights summing to 1; 0 for an empty task.

    Example::

        task_weights([800, 200], "temperature", temperature=2.0)   # sqrt(800) : sqrt(200) = 2 : 1
        -> array([0.6667, 0.3333])
    """
    sizes = np.asarray(task_sizes, dtype=np.float64)
    if isinstance(strategy, Mapping):
        if task_names is None:
            raise ValueError("explicit task weights need task_names")
        unknown = sorted(set(strategy) - set(task_names))
        if unknown:
            raise ValueError(f"data.task_sampling names unknown task(s) {unknown}; tasks are {list(task_names)}")
        w = np.asarray([float(strategy.get(name, 0.0)) for name in task_names])
    elif strategy == "proportional":
        w = sizes.copy()
    elif strategy == "uniform":
        w = (sizes > 0).astype(np.float64)
    elif strategy == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        w = np.where(sizes > 0, sizes ** (1.0 / temperature), 0.0)
    else:
        raise ValueError(f"unknown task sampling {strategy!r}; expected proportional, uniform, temperature or a map")
    w = np.where(sizes > 0, w, 0.0)
    if w.sum() <= 0:
        raise ValueError("task weights sum to 0: no task with samples has a positive weight")
    return w / w.sum()


def task_quotas(weights: np.ndarray, epoch_size: int) -> np.ndarray:
    """Samples per task in one epoch: epoch_size * w, rounded by largest remainder so the total is exact."""
    raw = np.asarray(weights, dtype=np.float64) * epoch_size
    quotas = np.floor(raw).astype(np.int64)
    short = int(epoch_size - quotas.sum())
    if short > 0:
        order = np.argsort(-(raw - quotas), kind="stable")
        quotas[order[:short]] += 1
    return quotas


class GlobalSampler:
    """Sample order of every epoch over a split whose tasks occupy consecutive global index ranges.

    task_offsets[k] is the first global sample index of task k and task_sizes[k] its count (the tokenized cache stores
    samples task by task). `epoch_order(e)` is deterministic in (seed, e).
    """

    def __init__(
        self,
        task_offsets: Sequence[int],
        task_sizes: Sequence[int],
        weights: np.ndarray,
        seed: int,
        epoch_size: int | None = None,
    ) -> None:
        self.task_offsets = np.asarray(task_offsets, dtype=np.int64)
        self.task_sizes = np.asarray(task_sizes, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.seed = int(seed)
        self.epoch_size = int(epoch_size if epoch_size is not None else self.task_sizes.sum())
        if self.epoch_size <= 0:
            raise ValueError("the train split has no samples")
        self.quotas = task_quotas(self.weights, self.epoch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global sample indices of epoch `epoch`, in training order (int64)."""
        rng = np.random.default_rng([self.seed, int(epoch), 0x5A17])
        chosen = []
        for offset, size, quota in zip(self.task_offsets, self.task_sizes, self.quotas, strict=True):
            if quota == 0 or size == 0:
                continue
            full, rest = divmod(int(quota), int(size))
            picks = [rng.permutation(size) for _ in range(full)]
            if rest:
                picks.append(rng.permutation(size)[:rest])
            chosen.append(np.concatenate(picks) + offset)
        everything = np.concatenate(chosen)
        return everything[rng.permutation(len(everything))]
