"""Human-facing views of an evaluation directory: the Markdown report, the PNG of pass rate by problem, and the
terminal table of ``mft-eval report``."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mft_eval.outputs import read_jsonl, write_text_atomic


def failing_tasks(results: list[dict]) -> dict[str, list[str]]:
    """task_id -> statuses of its non-passing samples (for tasks with no passing sample)."""
    by_task: dict[str, list[str]] = {}
    for r in results:
        by_task.setdefault(r["task_id"], []).append(r["status"])
    return {t: s for t, s in by_task.items() if "passed" not in s}


def markdown(summary: dict, results: list[dict]) -> str:
    lines = [f"# mft-eval: {summary['benchmark']['name']}", ""]
    lines += ["| metric | value |", "|---|---|"]
    for k, v in summary["pass_at_k"].items():
        lines.append(f"| pass@{k} | {v:.4f} |")
    lines.append(f"| problems | {summary['num_problems']} |")
    lines.append(f"| samples | {summary['num_samples']} |")
    for status, count in summary["counts"].items():
        lines.append(f"| {status} | {count} |")
    isolation = summary.get("settings", {}).get("sandbox", {}).get("isolation", {})
    if isolation.get("mechanism") == "none":
        lines += ["", f"**The programs ran without kernel isolation** ({isolation.get('reason', 'unknown reason')}): "
                  "no namespaces, no read-only view of the system; only rlimits and the worker's uid applied."]
    if summary.get("skipped_k"):
        lines += ["", f"pass@k skipped for k = {summary['skipped_k']} (some problem has fewer than k samples)."]
    lines += ["", "## Settings", "", "```json", json.dumps(summary["settings"], indent=2), "```", ""]
    failing = failing_tasks(results)
    lines += [f"## Tasks with no passing sample ({len(failing)})", ""]
    details = {}
    for r in results:
        if r["status"] != "passed":
            details.setdefault(r["task_id"], f"{r['status']}: {r['detail']}")
    for task in failing:
        lines.append(f"- `{task}`: {details.get(task, '')}")
    lines.append("")
    return "\n".join(lines)


def plot_pass_rate(per_problem: dict[str, list[int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_problem)
    rates = [c / n if n else 0.0 for n, c in per_problem.values()]
    width = max(6.0, min(40.0, 0.12 * len(names) + 2))
    fig, ax = plt.subplots(figsize=(width, 3.5))
    ax.bar(range(len(names)), rates, color=["tab:green" if r > 0 else "tab:red" for r in rates], width=0.9)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("pass rate")
    ax.set_xlabel(f"problem ({len(names)})")
    ax.set_title(title)
    if len(names) <= 40:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_report(output: Path, summary: dict, results: list[dict]) -> None:
    write_text_atomic(output / "report.md", markdown(summary, results))
    plot_pass_rate(summary["per_problem"], output / "pass_rate_by_problem.png",
                   f"{summary['benchmark']['name']}: pass@1 by problem")


def print_report(output: Path, console: Console | None = None, max_failing: int = 200) -> dict:
    console = console or Console()
    summary_path = output / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: not found (is {output} an mft-eval output directory?)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    results = read_jsonl(output / "results.jsonl")
    table = Table(title=f"mft-eval {summary['benchmark']['name']} ({output})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary["pass_at_k"].items():
        table.add_row(f"pass@{k}", f"{v:.4f}")
    table.add_row("problems", str(summary["num_problems"]))
    table.add_row("samples", str(summary["num_samples"]))
    for status, count in summary["counts"].items():
        table.add_row(status, str(count))
    console.print(table)
    if summary.get("skipped_k"):
        console.print(f"pass@k skipped for k = {summary['skipped_k']}: some problem has fewer than k samples")
    failing = failing_tasks(results)
    console.print(f"tasks with no passing sample: {len(failing)}")
    firsts = {}
    for r in results:
        if r["status"] != "passed":
            firsts.setdefault(r["task_id"], f"{r['status']}: {r['detail']}")
    for task in list(failing)[:max_failing]:
        console.print(f"  {task}  {firsts.get(task, '')}", markup=False)
    return summary
