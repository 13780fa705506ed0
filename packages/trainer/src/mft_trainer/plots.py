"""PNG plots a person would rather look at than read: per-task train and validation loss, task weights over steps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training nodes have no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

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
            marker = "." if len(steps) <= 200 else None  # dots mark sparse points; a long curve is a line
            ax.plot(list(steps), [v if v is not None else math.nan for v in values], marker=marker, label=name)
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
    smooth_window: int = 1,
) -> Path:
    """Plot ``record[key][task]`` over ``record['step']`` for every task, from a list of logged records
    (a record without ``key`` is a gap), each series a trailing mean over ``smooth_window`` points."""
    steps = [int(r["step"]) for r in records]
    series = {
        name: smooth([float(r.get(key, {}).get(name, math.nan)) for r in records], smooth_window)  # type: ignore[union-attr]
        for name in task_names
    }
    if smooth_window > 1:
        ylabel = f"{ylabel} (mean of {smooth_window} steps)"
    return plot_series(steps, series, path, title=title, ylabel=ylabel)


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` finite values at each point; NaN where a point is NaN.

    A task absent from a step (NaN) neither enters its neighbours' means nor gets a smoothed value of its own.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out: list[float] = []
    recent: list[float] = []
    for value in values:
        if value is None or math.isnan(value):
            out.append(math.nan)
            continue
        recent.append(float(value))
        if len(recent) > window:
            recent.pop(0)
        out.append(sum(recent) / len(recent))
    return out


def plot_training_curves(
    train_records: Sequence[Mapping[str, object]],
    valid_records: Sequence[Mapping[str, object]],
    task_names: Sequence[str],
    path: Path,
    *,
    title: str,
    weights_act: bool = True,
) -> Path:
    """Three panels over optimizer steps, one colour per task: train loss (raw faint, trailing mean solid),
    validation loss where it was measured, and the task weights in force at each step, or, where no task weights
    act (``weights_act`` false: `token` and `sample` mode), each task's share of the step's loss (trailing mean)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = [int(r["step"]) for r in train_records]  # type: ignore[call-overload]
    window = max(1, len(steps) // 40)
    fig, (ax_train, ax_valid, ax_weight) = plt.subplots(3, 1, figsize=(8, 9), dpi=100, sharex=True)
    try:
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, name in enumerate(task_names):
            colour = colours[k % len(colours)]
            raw = [float(r["train"].get(name, math.nan)) for r in train_records]  # type: ignore[union-attr]
            # Only the steps that held the task: a line through them, not one broken at every absent step.
            present = [i for i, v in enumerate(raw) if not math.isnan(v)]
            at = [steps[i] for i in present]
            ax_train.plot(at, [raw[i] for i in present], color=colour, alpha=0.2, linewidth=0.8)
            ax_train.plot(at, smooth([raw[i] for i in present], window), color=colour, label=name)
            points = [(int(r["step"]), float(r["valid"][name])) for r in valid_records  # type: ignore[index]
                      if not math.isnan(float(r["valid"].get(name, math.nan)))]  # type: ignore[union-attr]
            if points:
                ax_valid.plot(*zip(*points, strict=True), color=colour, marker="o", markersize=3, label=name)
            if weights_act:
                weights = [float(r["weights"].get(name, math.nan)) for r in train_records]  # type: ignore[union-attr]
            else:  # records from a checkpoint written before shares were logged have none: a gap
                weights = smooth([float(r.get("share", {}).get(name, math.nan))  # type: ignore[union-attr]
                                  for r in train_records], window)
            ax_weight.plot(steps, weights, color=colour, label=name)
        ax_train.set_ylabel(f"train loss (mean of {window} steps)")
        ax_valid.set_ylabel("validation loss")
        ax_weight.set_ylabel("task weight" if weights_act else f"share of the loss (mean of {window} steps)")
        ax_weight.set_ylim(bottom=0)  # weights are shares: from 0, so constant ones read as constant, not as noise
        ax_weight.set_xlabel("optimizer step")
        for ax in (ax_train, ax_valid):
            ax.set_yscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)  # a range inside one decade is labelled by its minor ticks
        for ax in (ax_train, ax_valid, ax_weight):
            ax.grid(True, alpha=0.3)
        ax_train.legend(fontsize="small", ncol=2)
        ax_train.set_title(title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
