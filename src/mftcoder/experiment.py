"""The balancing experiment's last stage: gather every arm × seed cell into results.json, a table and plots.

`pipelines/experiment-cpu.yaml` trains one model per (seed, arm) in its `train` stage (mixed data: SFT-mixed and
the MFT arms), one per (seed, task) in `train-single` (SFT-single), and scores them in `eval` / `eval-single`.
`collect` reads what those cells wrote (Contract 2's mft_train.json, Contract 3's summary.json, the runner's stage
records for the training time) and writes, under its output folder::

    results.json   {"arms": {arm: {task: {"pass@1": [per seed], "valid_loss": [per seed]}}},
                    "seeds": [...], "steps": N, "single_steps": {task: n}, "train_seconds": {arm: [per seed]},
                    "unseen": [tasks], ...}
    results.md     one row per arm: mean ± standard deviation over seeds of each task's pass@1 and validation loss
    <task>.png     per task, the arms side by side: mean with a bar of ± one standard deviation, each seed a dot

SFT-single's validation loss of a task is that task's own model's; its pass@1 on a task comes from the model the
pipeline's `scored` axis names (its own task's, and text_to_code's for the unseen task). A missing cell (a stage
not run) leaves a null in its seed's place, so a partial run still gives a table.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from mftcoder.pipeline import Pipeline, load_pipeline
from mftcoder.state import read_record

SINGLE = "sft-single"


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def gather(pipeline: Pipeline) -> dict[str, Any]:
    """results.json's content from the cells' outputs."""
    matrix = pipeline.spec.matrix
    seeds = [str(s) for s in matrix["seed"]]
    arms = [SINGLE, *[str(a) for a in matrix["arm"]]]
    tasks = [str(t) for t in matrix["task"]]
    scored = [str(t) for t in matrix["scored"]]
    unseen = [t for t in scored if t not in tasks]
    table: dict[str, dict[str, dict[str, list[float | None]]]] = {
        arm: {task: {"pass@1": [None] * len(seeds), "valid_loss": [None] * len(seeds)} for task in tasks + unseen}
        for arm in arms
    }
    seconds: dict[str, list[float | None]] = {arm: [None] * len(seeds) for arm in arms}
    steps = None
    single_steps: dict[str, int] = {}
    for stage in pipeline.stages:
        if stage.cell is None:
            continue
        cell = stage.cell
        where = seeds.index(cell["seed"])
        output = pipeline.workdir / stage.name
        if stage.base in ("train", "train-single"):
            if stage.base == "train":
                steps = stage.config.get("max_steps", steps)
            else:
                single_steps[str(cell["task"])] = stage.config.get("max_steps")
            info = _read_json(output / "final" / "mft_train.json")
            record = read_record(pipeline.workdir, stage.name)
            arm = cell.get("arm", SINGLE)
            if record is not None and record.status == "done":
                seconds[arm][where] = (seconds[arm][where] or 0.0) + record.duration
            for task, value in ((info or {}).get("valid_loss_per_task") or {}).items():
                if task in table[arm] and value is not None and (arm != SINGLE or task == cell.get("task")):
                    table[arm][task]["valid_loss"][where] = float(value)
        elif stage.base in ("eval", "eval-single"):
            summary = _read_json(output / "summary.json")
            if summary is not None:
                arm = cell.get("arm", SINGLE)
                table[arm][cell["scored"]]["pass@1"][where] = float(summary["pass_at_k"]["1"])
    return {
        "arms": table,
        "seeds": [int(s) if s.lstrip("-").isdigit() else s for s in seeds],
        "steps": steps,
        "single_steps": single_steps,
        "train_seconds": seconds,
        "tasks": tasks,
        "scored": scored,
        "unseen": unseen,
        "pipeline": str(pipeline.path),
    }


def mean_sd(values: list[float | None]) -> tuple[float, float, int] | None:
    """Mean, sample standard deviation (0 for one value) and count of the measured values; None if none."""
    got = [v for v in values if v is not None]
    if not got:
        return None
    return statistics.fmean(got), (statistics.stdev(got) if len(got) > 1 else 0.0), len(got)


def markdown(results: dict[str, Any]) -> str:
    """One row per arm: each task's pass@1 (executable tasks) and validation loss, mean ± sd over seeds."""
    columns: list[tuple[str, str]] = [(t, "pass@1") for t in results["scored"]]
    columns += [(t, "valid_loss") for t in results["tasks"]]
    head = ["arm", *[f"{t} {m}" for t, m in columns], "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, per_task in results["arms"].items():
        cells = [arm]
        for task, metric in columns:
            stats = mean_sd(per_task[task][metric])
            digits = 2 if metric == "pass@1" else 3
            cells.append("" if stats is None else f"{stats[0]:.{digits}f} ± {stats[1]:.{digits}f}")
        stats = mean_sd(results["train_seconds"][arm])
        cells.append("" if stats is None else f"{stats[0]:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(str(s) for s in results["seeds"])
    unseen = ", ".join(results["unseen"]) or "none"
    lines.append("")
    single = ", ".join(f"{task} {n}" for task, n in results.get("single_steps", {}).items())
    lines.append(
        f"Mean ± sample standard deviation over seeds {seeds}; {results['steps']} optimizer steps per arm "
        f"(SFT-single's models: {single or 'none'}); unseen task (no arm trains on it): {unseen}; train s: training "
        f"seconds per arm and seed (SFT-single: its {len(results['tasks'])} models together)."
    )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], task: str, metric: str, path: Path) -> Path:
    """The arms side by side for one task and metric: mean ± sd bars, each seed a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    arms = list(results["arms"])
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        for x, arm in enumerate(arms):
            values = [v for v in results["arms"][arm][task][metric] if v is not None]
            if not values:
                continue
            mean = statistics.fmean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.bar(x, mean, yerr=sd, capsize=5, color="tab:orange" if arm == SINGLE else "tab:blue", alpha=0.6)
            ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
        ax.set_ylabel(metric)
        if metric == "valid_loss":  # losses of arms that learned and of one that diverged differ by decades
            ax.set_yscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        unseen = " (unseen task)" if task in results["unseen"] else ""
        ax.set_title(f"{task}{unseen}: {metric}, mean ± sd over seeds {results['seeds']}, dots = seeds")
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def collect(output: Path, pipeline: str) -> None:
    """The `collect` stage: results.json, results.md and one PNG per task and metric under `output`.

    The workdir is `output`'s parent (the runner puts a stage's output at `<workdir>/<stage>`); it is no argument,
    because a folder named in a stage's config is an input whose mtime changes whenever any stage writes.
    """
    results = gather(load_pipeline(Path(pipeline), output.parent))
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (output / "results.md").write_text(markdown(results), encoding="utf-8")
    for task in results["scored"]:
        plot(results, task, "pass@1", output / f"{task}.pass@1.png")
    for task in results["tasks"]:
        plot(results, task, "valid_loss", output / f"{task}.valid_loss.png")
    flat = {}
    for arm, per_task in results["arms"].items():
        for task, metrics in per_task.items():
            stats = mean_sd(metrics["pass@1"])
            if stats is not None and not math.isnan(stats[0]):
                flat[f"{arm}/{task}/pass@1"] = stats[0]
    (output / "metrics.json").write_text(json.dumps(flat, indent=1) + "\n", encoding="utf-8")
