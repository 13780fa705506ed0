"""`mft-prep synth`: a thin typer command over `mft_dataprep.synth.generate`.

The mft-prep CLI registers it with `app.command("synth")(synth_command)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from mft_cli import output_console
from pydantic import ValidationError
from rich.table import Table

from .build import generate
from .config import EXECUTABLE_TASKS, TASK_FORMATS, TASKS, SynthConfig
from .tasks import GenerationError


def _load_config(path: Path) -> SynthConfig:
    if not path.is_file():
        raise typer.BadParameter(f"{path}: file not found", param_hint="--config")
    try:
        data = (
            yaml.safe_load(path.read_text(encoding="utf-8"))
            if path.suffix in (".yaml", ".yml")
            else json.loads(path.read_text(encoding="utf-8"))
        )
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise typer.BadParameter(f"{path}: cannot parse: {err}", param_hint="--config") from None
    try:
        return SynthConfig.model_validate(data or {})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()
        )
        raise typer.BadParameter(f"{path}: {problems}", param_hint="--config") from None


def synth_command(
    output: Annotated[
        Path, typer.Argument(help="Folder to write raw/, heldout/, heldout_hard/, prep_tasks.yaml into.")
    ],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives byte-identical files.")] = 0,
    scale: Annotated[
        float, typer.Option(help="Multiplier on the number of training records of every task.")
    ] = 1.0,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON file of SynthConfig options (overrides --seed and --scale)."),
    ] = None,
) -> None:
    """Generate the seeded synthetic multi-task code corpus and its held-out HumanEval-format problems."""
    try:
        cfg = _load_config(config) if config is not None else SynthConfig(seed=seed, scale=scale)
    except ValidationError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        summary = generate(output, config=cfg)
    except GenerationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    table = Table(
        title=f"synthetic corpus, seed {summary.seed}{' (already complete)' if summary.reused else ''}"
    )
    for column in ("task", "format", "train", "held-out", "held-out hard"):
        table.add_column(column, justify="left" if column in ("task", "format") else "right")
    for task in TASKS:
        executable = task in EXECUTABLE_TASKS
        table.add_row(
            task,
            TASK_FORMATS[task],
            str(summary.train_counts[task]),
            str(summary.heldout_counts.get(task, 0)) if executable else "-",
            str(summary.heldout_hard_counts.get(task, 0)) if executable else "-",
        )
    console = output_console()
    console.print(table)
    console.print(f"prep config: {summary.prep_config_path}\nmanifest:    {summary.manifest_path}")
