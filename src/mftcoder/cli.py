"""`mft`: run a whole pipeline (`mft run`) and show where each stage stands (`mft status`).

The command-line conventions are `mft_cli`'s: `-h`, `--version`, `--debug` (or MFT_DEBUG=1,
passed on to the stages) and errors as one line `error: ...` with exit status 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from mft_cli import ToolApp, debug_enabled, output_console
from rich.console import Console
from rich.table import Table

from mftcoder import __version__
from mftcoder.pipeline import load_pipeline
from mftcoder.runner import StageFailed, dry_run, load_summary, plan
from mftcoder.runner import run as run_pipeline

app = ToolApp("mft", __version__, no_args_is_help=True, help=__doc__.split("\n\n")[0])

PipelineArg = Annotated[Path, typer.Argument(help="the pipeline YAML (see pipelines/)")]
WorkdirOpt = Annotated[Path | None, typer.Option("--workdir", help="override the pipeline's workdir")]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help="set the seed of every stage (synthesis, initialisation, data order, sampling)"),
]


@app.command("run")
def run_command(
    ctx: typer.Context,
    pipeline_file: PipelineArg,
    from_stage: Annotated[str | None, typer.Option("--from", help="rerun this stage and every later one")] = None,
    force: Annotated[bool, typer.Option("--force", help="rerun every stage")] = False,
    dry_run_: Annotated[bool, typer.Option("--dry-run", help="validate every stage's config; run nothing")] = False,
    workdir: WorkdirOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Run the stages in order, skipping those whose config and inputs have not changed."""
    pipeline = load_pipeline(pipeline_file, workdir, seed)
    if dry_run_:
        dry_run(pipeline)
        return
    try:
        summary = run_pipeline(pipeline, force=force, from_stage=from_stage, debug=debug_enabled(ctx))
    except StageFailed as exc:  # the stage's own error and traceback are in its log
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(1) from None
    print_summary(summary, output_console())


@app.command("status")
def status_command(pipeline_file: PipelineArg, workdir: WorkdirOpt = None, seed: SeedOpt = None) -> None:
    """Show each stage: done, stale (and why), failed, or not run."""
    console = output_console()
    pipeline = load_pipeline(pipeline_file, workdir, seed)
    plans = plan(pipeline)
    console.print(f"pipeline {pipeline.name}: {pipeline.workdir}", markup=False)
    table = Table()
    for column in ("stage", "tool", "state", "why", "last duration", "output"):
        table.add_column(column, no_wrap=column in ("stage", "output"))
    colours = {"done": "green", "stale": "yellow", "failed": "red", "not run": "dim"}
    for item in plans:
        duration = f"{item.record.duration:.1f} s" if item.record and item.record.finished else ""
        table.add_row(
            item.stage.name, item.stage.tool, f"[{colours[item.state]}]{item.state}[/]",
            "; ".join(item.reasons), duration, str(item.output),
        )
    console.print(table)
    if pipeline.spec.matrix:
        console.print(matrix_table(pipeline, plans))
    summary = load_summary(pipeline)
    if summary:
        print_metrics(summary, console)


def matrix_table(pipeline: Any, plans: list[Any]) -> Table:
    """One row per matrixed stage of the file: its axes, and how many of its cells are in each state."""
    axes = ", ".join(f"{axis} ({len(values)})" for axis, values in pipeline.spec.matrix.items())
    table = Table(title=f"matrix: {axes}")
    states = ("done", "stale", "failed", "not run")
    for column in ("stage", "over", "cells", *states):
        table.add_column(column, justify="left" if column in ("stage", "over") else "right")
    by_base: dict[str, list[Any]] = {}
    for item in plans:
        if item.stage.base is not None:
            by_base.setdefault(item.stage.base, []).append(item)
    for base, items in by_base.items():
        counts = [sum(i.state == state for i in items) for state in states]
        table.add_row(base, " × ".join(items[0].stage.cell), str(len(items)), *(str(c) if c else "" for c in counts))
    return table


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title=f"pipeline {summary['pipeline']}")
    for column in ("stage", "tool", "status", "duration", "output"):
        table.add_column(column, no_wrap=column in ("stage", "output"))
    for stage in summary["stages"]:
        table.add_row(stage["stage"], stage["tool"], stage["status"], f"{stage['duration_s']:.1f} s", stage["output"])
    console.print(table)
    print_metrics(summary, console)


def print_metrics(summary: dict[str, Any], console: Console) -> None:
    metrics: dict[str, dict[str, float]] = summary.get("metrics", {})
    if metrics:
        names = sorted({name for values in metrics.values() for name in values})
        table = Table(title="metrics by task")
        table.add_column("task", no_wrap=True)
        for name in names:
            table.add_column(name, justify="right")
        for task, values in metrics.items():
            table.add_row(task, *(f"{values[n]:.4f}" if n in values else "" for n in names))
        console.print(table)
    train_time = sum(s["duration_s"] for s in summary["stages"] if s["tool"] == "train")
    console.print(f"training time (all train stages, as last run): {train_time:.1f} s")
    if summary.get("plots"):
        console.print("plots:\n  " + "\n  ".join(summary["plots"]))
    console.print(f"summary: {Path(summary['workdir']) / 'pipeline_summary.json'}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
