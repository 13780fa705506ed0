"""Adapters from a pipeline stage to each tool's Python API.

Each adapter knows, for its tool: the config key that names the output (filled with `<workdir>/<stage>` when the
pipeline leaves it out), how to validate a config dict with the tool's own pydantic schema (so `--dry-run` checks
every stage without loading a model), what `${stage.output}` means, how to run it, and which metrics it reports.
The packages are imported lazily, so the runner starts fast and `mft status` needs none of them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mftcoder.pipeline import PipelineError, format_validation_error


@dataclass(frozen=True)
class Tool:
    name: str
    output_key: str
    validate: Callable[[dict[str, Any], Path], Any]
    run: Callable[[Any], None]
    metrics: Callable[[Path], dict[str, float]]
    output_subdir: str = ""

    def output_of(self, config: dict[str, Any], base_dir: Path) -> Path:
        """What `${stage.output}` means, from the (resolved) config alone: no package import needed."""
        out = Path(config[self.output_key])
        out = out if out.is_absolute() else base_dir / out
        return out / self.output_subdir if self.output_subdir else out


def _validated(schema: Any, data: dict[str, Any], what: str) -> Any:
    """Validate with a tool's schema; pydantic errors and the tools' own ConfigErrors become PipelineErrors."""
    try:
        return schema(data)
    except ValidationError as exc:
        raise PipelineError(f"{what}: {format_validation_error(exc, 'config')}") from exc
    except ValueError as exc:  # the tools' ConfigError (missing files, bad combinations) subclasses ValueError
        raise PipelineError(f"{what}: {exc}") from exc


# --- prep ---------------------------------------------------------------------------------------------------------
def _prep_validate(config: dict[str, Any], base_dir: Path) -> Any:
    from mft_dataprep.api import PrepConfig

    return _validated(lambda d: PrepConfig.from_dict(d, base_dir=base_dir), config, "prep")


def _prep_run(cfg: Any) -> None:
    from mft_dataprep.api import run

    run(cfg)


# --- synth --------------------------------------------------------------------------------------------------------
def _synth_validate(config: dict[str, Any], base_dir: Path) -> Any:
    from mft_dataprep.synth import SynthConfig

    data = dict(config)
    output = Path(data.pop("output_dir"))
    output = output if output.is_absolute() else base_dir / output
    return output, _validated(SynthConfig.model_validate, data, "synth")


def _synth_run(validated: Any) -> None:
    from mft_dataprep.synth import generate

    output, cfg = validated
    generate(output, config=cfg)


# --- train --------------------------------------------------------------------------------------------------------
def _train_validate(config: dict[str, Any], base_dir: Path) -> Any:
    from mft_trainer.config import TrainConfig

    return _validated(lambda d: TrainConfig.from_dict(d, base_dir=base_dir), config, "train")


def _train_run(cfg: Any) -> None:
    from mft_trainer.api import train

    # The runner reruns a stage that finished only when it is stale or forced, so a `final/` already there is the
    # earlier run's, to be replaced; without one, an interrupted stage resumes from its checkpoints.
    train(cfg, overwrite=(Path(cfg.output_dir) / "final").is_dir())


def _train_metrics(output: Path) -> dict[str, float]:
    """`valid_loss` per task from Contract 2's mft_train.json, keyed `<task>.valid_loss`."""
    info = output / "mft_train.json"
    if not info.is_file():
        return {}
    data = json.loads(info.read_text(encoding="utf-8"))
    losses = data.get("valid_loss_per_task") or {}
    return {f"{task}.valid_loss": float(value) for task, value in losses.items() if value is not None}


# --- eval ---------------------------------------------------------------------------------------------------------
def _eval_validate(config: dict[str, Any], base_dir: Path) -> Any:
    from mft_eval.api import EvalConfig

    data = dict(config)
    for key in ("output", "model", "samples"):  # paths: relative ones resolve against the pipeline's folder
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base_dir / data[key])
    bench = data.get("benchmark")
    if isinstance(bench, str) and bench.endswith((".jsonl", ".json", ".jsonl.gz")) and not Path(bench).is_absolute():
        data["benchmark"] = str(base_dir / bench)
    cfg = _validated(EvalConfig.model_validate, data, "eval")
    if cfg.model and cfg.samples is None:  # `run`: the checkpoint must hold weights and a tokenizer
        from mft_eval.generate import check_checkpoint

        try:
            check_checkpoint(Path(cfg.model))
        except (OSError, ValueError) as exc:
            raise PipelineError(f"eval: key 'config.model': {exc}") from exc
    return cfg


def _eval_run(cfg: Any) -> None:
    from mft_eval.api import run

    run(cfg)


def _eval_metrics(output: Path) -> dict[str, float]:
    """pass@k from Contract 3's summary.json, keyed `pass@k`; a partial score (fewer problems than the benchmark
    has) is keyed `pass@k (3/164 problems)`, so that it is never shown as the benchmark's."""
    summary = output / "summary.json"
    if not summary.is_file():
        return {}
    data = json.loads(summary.read_text(encoding="utf-8"))
    part = f" ({data.get('problems_scored')}/{data.get('problems_total')} problems)" if data.get("partial") else ""
    return {f"pass@{k}{part}": float(v) for k, v in (data.get("pass_at_k") or {}).items()}


# --- python: any function, for users' own steps -------------------------------------------------------------------
class PythonStageConfig(BaseModel):
    """`tool: python`: call `module:function(output=Path, **args)`; the function writes under `output`."""

    model_config = ConfigDict(extra="forbid")

    callable: str
    output: Path
    args: dict[str, Any] = {}


def _python_validate(config: dict[str, Any], base_dir: Path) -> PythonStageConfig:
    cfg = _validated(PythonStageConfig.model_validate, config, "python")
    if not cfg.output.is_absolute():
        cfg = cfg.model_copy(update={"output": base_dir / cfg.output})
    module, sep, func = cfg.callable.partition(":")
    if not sep or not module or not func:
        raise PipelineError(f"python: key 'config.callable': expected 'module:function', got {cfg.callable!r}")
    return cfg


def _python_run(cfg: PythonStageConfig) -> None:
    module, _, func = cfg.callable.partition(":")
    function = getattr(importlib.import_module(module), func)
    function(output=cfg.output, **cfg.args)


def _python_metrics(output: Path) -> dict[str, float]:
    metrics = output / "metrics.json"
    if not metrics.is_file():
        return {}
    return {k: float(v) for k, v in json.loads(metrics.read_text(encoding="utf-8")).items()}


TOOLS: dict[str, Tool] = {
    "prep": Tool("prep", "output", _prep_validate, _prep_run, lambda _: {}),
    "synth": Tool("synth", "output_dir", _synth_validate, _synth_run, lambda _: {}),
    "train": Tool("train", "output_dir", _train_validate, _train_run, _train_metrics, output_subdir="final"),
    "eval": Tool("eval", "output", _eval_validate, _eval_run, _eval_metrics),
    "python": Tool("python", "output", _python_validate, _python_run, _python_metrics),
}


def get_tool(name: str) -> Tool:
    return TOOLS[name]
