"""`mft-train`: a thin typer CLI over the Python API (api.py, data/inspect.py, model/merge.py).

    mft-train train CONFIG.yaml [key=value ...] [--dry-run] [--no-progress] [--overwrite] [--allow-config-change]
    mft-train inspect CONFIG.yaml [--task NAME] [-n 2]
    mft-train merge --adapter DIR --output DIR [--base PATH] [--dtype auto|bf16|fp16|fp32]

Conventions shared with the other mft tools (mft_cli): -h, --version, --debug; errors as one line. Nothing heavy
(torch, transformers) is imported until a command runs, so OMP_WAIT_POLICY is set before torch loads.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from mft_cli import ToolApp, output_console, prefer_passive_openmp
from rich.console import Console
from rich.table import Table

from mft_trainer import __version__

if TYPE_CHECKING:
    from mft_trainer.config import TrainConfig

app = ToolApp("mft-train", __version__, no_args_is_help=True, help="Multi-task fine-tuning of code LLMs.")


@app.callback()
def _root() -> None:
    """Multi-task fine-tuning of code LLMs. OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE) unless set."""
    prefer_passive_openmp()  # before the command imports torch, which reads it once


def _load(config: Path, overrides: list[str] | None) -> TrainConfig:
    prefer_passive_openmp()  # commands invoked without the group callback (tests call them directly)
    from mft_trainer.config import ConfigError, TrainConfig

    try:
        return TrainConfig.from_yaml(config, overrides or [])
    except ConfigError as exc:
        raise ConfigError(one_line_config_error(str(exc))) from exc


def one_line_config_error(message: str) -> str:
    """`FILE: invalid configuration (N error(s)):` + one indented `key: problem` line per error, as one line:
    `FILE: key: problem; key: problem` (a cross-field check, reported at `<top level>`, names its keys itself)."""
    head, *errors = message.splitlines()
    if not errors or " invalid configuration (" not in head:
        return message
    source = head.split(": invalid configuration (")[0]
    return f"{source}: " + "; ".join(e.strip().removeprefix("<top level>: ") for e in errors if e.strip())


def _heading(console: Console, title: str) -> None:
    """A rule across a terminal; a short marked line in a file or pipe (whose console is PIPE_WIDTH wide)."""
    if console.is_terminal:
        console.rule(title)
    else:
        console.print(f"== {title} ==", markup=False)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="the training YAML")],
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides, e.g. optimizer.lr=1e-4")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check the inputs and print the resolved config, "
                                          "dataset, budget and how the run would start; loads no model")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="the live bar on a terminal; without "
                                           "it (and whenever stdout is not a terminal) a plain line every "
                                           "logging.log_every steps")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="start from scratch in an output_dir that holds "
                                            "an earlier run (finished or not), replacing it")] = False,
    allow_config_change: Annotated[bool, typer.Option("--allow-config-change", help="resume although the config "
                                                      "differs from the checkpoint's (lr, schedule, loss ...)")] = False,
) -> None:
    """Train (or resume) as CONFIG says; under torchrun every process runs this."""
    cfg = _load(config, overrides)
    console = output_console()
    if dry_run:
        from mft_trainer.api import dry_run_summary

        summary = dry_run_summary(cfg, overwrite=overwrite, allow_config_change=allow_config_change)
        _heading(console, "resolved config")
        console.print(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False), markup=False, soft_wrap=True)
        _heading(console, "dataset")
        table = Table("task", "kind", "train", "valid")
        for name, info in summary["dataset"]["tasks"].items():
            table.add_row(name, info["kind"], str(info["train"]), str(info["valid"]))
        console.print(table)
        if summary["dataset"]["empty_tasks"]:
            console.print(f"tasks with no records, left out (data.allow_empty_tasks): "
                          f"{', '.join(summary['dataset']['empty_tasks'])}", markup=False)
        console.print(f"manifest hash: {summary['dataset']['manifest_hash']}")
        _heading(console, "token budget")
        console.print(json.dumps(summary["budget"], indent=2), markup=False)
        _heading(console, "start")
        console.print(summary["start"], markup=False, soft_wrap=True)
        return
    from mft_trainer.api import train as run

    final = run(cfg, progress=progress, overwrite=overwrite, allow_config_change=allow_config_change)
    console.print(f"final model: {final}", markup=False)


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

    render.inspect(cfg, task=task, n=n, console=output_console(), plain=plain)


class MergeDtype(StrEnum):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


@app.command()
def merge(
    adapter: Annotated[Path, typer.Option("--adapter", help="a LoRA adapter directory (Contract 2)")],
    output: Annotated[Path, typer.Option("--output", help="where to write the merged model")],
    base: Annotated[str | None, typer.Option("--base", help="base model (default: the adapter's own)")] = None,
    dtype: Annotated[MergeDtype, typer.Option("--dtype", help="dtype of the merged weights; auto: the base "
                                              "model's own (its config.json; fp32 when it records none)")]
    = MergeDtype.auto,
) -> None:
    """Merge a LoRA adapter into its base and save a full model with tokenizer and template."""
    prefer_passive_openmp()
    from mft_trainer.model.merge import merge_adapter

    out = merge_adapter(adapter, output, base=base, dtype=dtype.value)
    output_console().print(f"merged model: {out}", markup=False)


if __name__ == "__main__":
    app()
