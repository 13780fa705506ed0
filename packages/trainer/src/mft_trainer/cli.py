"""`mft-train`: a thin typer CLI over the Python API (api.py, render.py, merge.py).

    mft-train train CONFIG.yaml [key=value ...] [--dry-run]
    mft-train inspect CONFIG.yaml [--task NAME] [-n 2]
    mft-train merge --adapter DIR --output DIR [--base PATH] [--dtype bf16|fp32]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from mft_trainer.config import ConfigError, TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multi-task fine-tuning of code LLMs.")
console = Console()
err_console = Console(stderr=True)


def _load(config: Path, overrides: list[str] | None) -> TrainConfig:
    try:
        return TrainConfig.from_yaml(config, overrides or [])
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="the training YAML")],
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides, e.g. optimizer.lr=1e-4")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved config, dataset and budget")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar (logs only)")] = False,
) -> None:
    """Train (or resume) as CONFIG says; under torchrun every process runs this."""
    cfg = _load(config, overrides)
    if dry_run:
        from mft_trainer.api import dry_run_summary

        summary = dry_run_summary(cfg)
        console.rule("resolved config")
        console.print(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False), highlight=False, markup=False, soft_wrap=True)
        console.rule("dataset")
        table = Table("task", "kind", "train", "valid")
        for name, info in summary["dataset"]["tasks"].items():
            table.add_row(name, info["kind"], str(info["train"]), str(info["valid"]))
        console.print(table)
        console.print(f"manifest hash: {summary['dataset']['manifest_hash']}", highlight=False)
        console.rule("token budget")
        console.print(json.dumps(summary["budget"], indent=2), highlight=False, markup=False)
        return
    from mft_trainer.api import train as run

    final = run(cfg, progress=not no_progress)
    console.print(f"final model: {final}", highlight=False)


@app.command()
def inspect(
    config: Annotated[Path, typer.Argument(help="the training YAML")],
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides")] = None,
    task: Annotated[str | None, typer.Option("--task", help="only this task")] = None,
    n: Annotated[int, typer.Option("-n", help="samples to show")] = 2,
    plain: Annotated[bool, typer.Option("--plain", help="mark supervised text with [[ ]] instead of colour")] = False,
) -> None:
    """Show samples through the template with supervised tokens marked, and the packed layout of one batch."""
    cfg = _load(config, overrides)
    from mft_trainer.data import inspect as render

    render.inspect(cfg, task=task, n=n, console=console, plain=plain)


@app.command()
def merge(
    adapter: Annotated[Path, typer.Option("--adapter", help="a LoRA adapter directory (Contract 2)")],
    output: Annotated[Path, typer.Option("--output", help="where to write the merged model")],
    base: Annotated[str | None, typer.Option("--base", help="base model (default: the adapter's own)")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="bf16 or fp32")] = "bf16",
) -> None:
    """Merge a LoRA adapter into its base and save a full model with tokenizer and template."""
    if dtype not in ("bf16", "fp32"):
        err_console.print(f"[red]error:[/red] --dtype: {dtype!r}; expected bf16 or fp32")
        raise typer.Exit(2)
    from mft_trainer.model.merge import merge_adapter

    out = merge_adapter(adapter, output, base=base, dtype=dtype)
    console.print(f"merged model: {out}", highlight=False)


if __name__ == "__main__":
    app()
