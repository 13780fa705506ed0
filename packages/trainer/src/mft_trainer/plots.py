"""PNG plots a person would rather look at than read: per-task validation loss and task weights over steps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training nodes have no display
import matplotlib.pyplot as plt  # noqa: E402

from mft_trainer.atomic import atomic_path  # noqa: E402


def plot_series(
    steps: Sequence[int],
    series: Mapping[str, Sequence[float]],
    path: Path,
    *,
    title: str,
    ylabel: str,
) -> Path:
    """One line per named series against ``steps``; NaN points are gaps. Written to a temp name, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        for name, values in series.items():
            if len(values) != len(steps):
                raise ValueError(f"series {name!r} has {len(values)} points for {len(steps)} steps")
            ax.plot(list(steps), [v if v is not None else math.nan for v in values], marker=".", label=name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize="small")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def plot_task_curves(
    records: Sequence[Mapping[str, object]],
    task_names: Sequence[str],
    key: str,
    path: Path,
    *,
    title: str,
    ylabel: str,
) -> Path:
    """Plot ``record[key][task]`` over ``record['step']`` for every task, from a list of logged records."""
    steps = [int(r["step"]) for r in records]
    series = {name: [float(r[key].get(name, math.nan)) for r in records] for name in task_names}  # type: ignore[union-attr]
    return plot_series(steps, series, path, title=title, ylabel=ylabel)
