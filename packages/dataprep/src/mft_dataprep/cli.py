"""The `mft-prep` command line: a thin typer layer over `mft_dataprep.api`, `stats` and `show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from mft_cli import ToolApp, output_console
from rich.panel import Panel
from rich.table import Table

from . import __version__
from .api import PrepConfig, run_with_result
from .show import first_records, source_locations
from .stats import compute_stats
from .synth.cli import synth_command

app = ToolApp("mft-prep", __version__, no_args_is_help=True,
              help="mft-prep: raw instruction data -> validated, deduplicated, task-tagged Arrow shards.")
app.command("synth")(synth_command)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="the prep config YAML")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="output directory (overrides `output`)")] = None,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="progress on stderr (plain lines when not a terminal)")] = True,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, help="worker processes (default: one per CPU for inputs of 16 MiB or more; 0: none); "
        "the output is the same for every value")] = None,
    allow_empty: Annotated[bool, typer.Option(
        "--allow-empty", help="allow tasks that keep no record (else an error; per task: `allow_empty`)")] = False,
) -> None:
    """Prepare a dataset: read, validate, filter, dedup, decontaminate, split, write shards and manifest.json."""
    console = output_console()
    cfg = PrepConfig.from_yaml(config)
    result = run_with_result(cfg, output, progress=progress, workers=workers, allow_empty=allow_empty)
    m = result.manifest
    if result.skipped:
        console.print(f"[green]up to date[/]: {result.output} (config and inputs unchanged; {result.seconds:.2f}s)")
    console.print(summary_table(m))
    for name, t in m["tasks"].items():
        if t["kept"] == 0:
            console.print(f"[yellow]warning[/]: task {name!r} kept no record (allowed); see rejects.jsonl")
    console.print(f"{'reused' if result.skipped else 'wrote'} {result.output} in {result.seconds:.2f}s")


def summary_table(manifest: dict[str, Any]) -> Table:
    table = Table(title="mft-prep summary")
    for col in ("task", "kind", "read", "kept", "train", "valid", "rejected", "dup", "contam"):
        table.add_column(col, justify="left" if col in ("task", "kind") else "right", no_wrap=True)
    for name, t in manifest["tasks"].items():
        table.add_row(name, t["kind"], *(f"{v:,}" for v in (
            t["read"], t["kept"], t["splits"]["train"]["records"], t["splits"]["valid"]["records"],
            t["rejected"], t["duplicate"], t["contaminated"])))
    tot = manifest["totals"]
    train = sum(t["splits"]["train"]["records"] for t in manifest["tasks"].values())
    valid = sum(t["splits"]["valid"]["records"] for t in manifest["tasks"].values())
    table.add_row("[bold]total", "", *(f"[bold]{v:,}" for v in (
        tot["read"], tot["kept"], train, valid, tot["rejected"], tot["duplicate"], tot["contaminated"])))
    notes = [f"{n}: {t['valid_note']}" for n, t in manifest["tasks"].items() if t["valid_note"]]
    if notes:
        table.caption = "\n".join(notes)
    return table


@app.command()
def stats(directory: Annotated[Path, typer.Argument(help="a prepared dataset directory")]) -> None:
    """Records, turns and character-length percentiles per task and split (DuckDB), totals and reject reasons."""
    console = output_console()
    s = compute_stats(directory)
    console.print(f"{directory}: records per task and split (characters per record)", markup=False)
    table = Table()
    for col in ("task", "split", "records", "turns", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="left" if col in ("task", "split") else "right", no_wrap=True)
    for r in s["splits"]:
        table.add_row(r["task"], r["split"], *(f"{r[k]:,}" for k in ("records", "turns", "p50", "p90", "p99",
                                                                        "max_chars")))
    console.print(table)
    tot = s["totals"]
    console.print(
        f"totals: read {tot['read']:,} = kept {tot['kept']:,} + rejected {tot['rejected']:,} "
        f"+ duplicate {tot['duplicate']:,} + contaminated {tot['contaminated']:,}", highlight=False)
    if s["reasons"]:
        reasons = Table(title="not carried forward, by reason (details in rejects.jsonl)")
        reasons.add_column("category:reason", no_wrap=True)
        reasons.add_column("records", justify="right")
        reasons.add_column("first at", no_wrap=True)
        for reason, n in sorted(s["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
            reasons.add_row(reason, f"{n:,}", s["first_at"].get(reason, ""))
        console.print(reasons)
    for name, t in s["tasks"].items():
        if t["valid_note"]:
            console.print(f"[yellow]{name}[/]: {t['valid_note']}", highlight=False)


@app.command()
def show(
    directory: Annotated[Path, typer.Argument(help="a prepared dataset directory")],
    task: Annotated[str, typer.Option("--task", "-t", help="task name")],
    n: Annotated[int, typer.Option("-n", help="how many records")] = 3,
    split: Annotated[Literal["train", "valid"], typer.Option("--split")] = "train",
) -> None:
    """Pretty-print the first N records of a task (boxed on a terminal, plain text in a file or pipe)."""
    console = output_console()
    records = first_records(directory, task, n, split)
    where = source_locations(directory)
    if not records:
        console.print(f"no records in {split}/{task}")
    colours = {"system": "magenta", "user": "cyan", "assistant": "green"}
    for rec in records:
        place = where(rec["source"], rec["source_index"])
        if not console.is_terminal:
            console.print(f"== {rec['id']}  ({place})", markup=False)
            for m in rec["messages"]:
                console.print(f"-- {m['role']}\n{m['content']}", markup=False)
            continue
        body = "\n\n".join(f"[bold {colours[m['role']]}]{m['role']}[/]\n{_escape(m['content'])}" for m in rec["messages"])
        console.print(Panel(body, title=f"{rec['id']}", subtitle=_escape(place), title_align="left",
                            subtitle_align="right"))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


if __name__ == "__main__":
    app()
