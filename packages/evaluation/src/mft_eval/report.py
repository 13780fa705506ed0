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


def partial_line(summary: dict) -> str | None:
    """`partial: problems scored 3 of 164; ...` when the score is not the whole benchmark's, else None."""
    if not summary.get("partial"):
        return None
    scored = summary.get("problems_scored", summary["num_problems"])
    return (f"partial: {'; '.join(summary.get('partial_reasons', []))}; pass@k is over these {scored} problems, "
            f"not {summary['benchmark']['name']}'s")


def metric_label(summary: dict, k: str) -> str:
    """`pass@1`, or `pass@1 (3 of 164 problems)` for a partial score."""
    if not summary.get("partial"):
        return f"pass@{k}"
    return f"pass@{k} ({summary.get('problems_scored')} of {summary.get('problems_total')} problems)"


def markdown(summary: dict, results: list[dict]) -> str:
    lines = [f"# mft-eval: {summary['benchmark']['name']}", ""]
    partial = partial_line(summary)
    if partial:
        lines += [f"**{partial[0].upper() + partial[1:]}.**", ""]
    lines += ["| metric | value |", "|---|---|"]
    for k, v in summary["pass_at_k"].items():
        lines.append(f"| {metric_label(summary, k)} | {v:.4f} |")
    lines.append(f"| problems | {summary['num_problems']} of {summary.get('problems_total', summary['num_problems'])} |")
    if summary.get("limit") is not None:
        lines.append(f"| limit | {summary['limit']} (the first {summary['limit']} problems) |")
    lines.append(f"| samples | {summary['num_samples']} |")
    for status, count in summary["counts"].items():
        lines.append(f"| {status} | {count} |")
    isolation = summary.get("settings", {}).get("sandbox", {}).get("isolation", {})
    if isolation.get("mechanism") == "none":
        lines += ["", f"**The programs ran without kernel isolation** ({isolation.get('reason', 'unknown reason')}): "
                  "no namespaces, no read-only view of the system; only rlimits and the worker's uid applied."]
    if summary.get("skipped_k"):
        lines += ["", f"pass@k skipped for k = {summary['skipped_k']} (some problem has fewer than k samples)."]
    unreadable = summary.get("unreadable_lines") or {}
    if unreadable.get("count"):
        lines += ["", f"## Unreadable samples lines, skipped ({unreadable['count']})", ""]
        lines += [f"- {line}" for line in unreadable["first"]]
        if unreadable["count"] > len(unreadable["first"]):
            lines.append(f"- ... and {unreadable['count'] - len(unreadable['first'])} more")
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
    console.print(f"mft-eval {summary['benchmark']['name']}: {output}", markup=False, highlight=False)
    partial = partial_line(summary)
    if partial:
        console.print(f"[bold yellow]{partial}[/]", highlight=False)
    table = Table()
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    for k, v in summary["pass_at_k"].items():
        table.add_row(metric_label(summary, k), f"{v:.4f}")
    table.add_row("problems", f"{summary['num_problems']} of {summary.get('problems_total', summary['num_problems'])}")
    if summary.get("limit") is not None:
        table.add_row("limit", str(summary["limit"]))
    table.add_row("samples", str(summary["num_samples"]))
    for status, count in summary["counts"].items():
        table.add_row(status, str(count))
    console.print(table)
    if summary.get("skipped_k"):
        console.print(f"pass@k skipped for k = {summary['skipped_k']}: some problem has fewer than k samples")
    unreadable = summary.get("unreadable_lines") or {}
    if unreadable.get("count"):
        console.print(f"[yellow]unreadable samples lines skipped: {unreadable['count']}[/]", highlight=False)
        for line in unreadable["first"][:5]:
            console.print(f"  {line}", markup=False, highlight=False)
    failing = failing_tasks(results)
    console.print(f"tasks with no passing sample: {len(failing)}")
    firsts = {}
    for r in results:
        if r["status"] != "passed":
            firsts.setdefault(r["task_id"], f"{r['status']}: {r['detail']}")
    for task in list(failing)[:max_failing]:
        console.print(f"  {task}  {firsts.get(task, '')}", markup=False)
    return summary
