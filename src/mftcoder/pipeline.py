"""The pipeline file (Contract 4): its schema, loading, and `${stage.output}` reference resolution.

A pipeline is a YAML file::

    name: demo-cpu
    workdir: ../work/demo          # relative paths resolve against the pipeline file's folder
    stages:
      - name: prep                 # unique; `${prep.output}` refers to its output
        tool: prep                 # prep | synth | train | eval | python
        config: {...}              # that tool's own config (validated by the tool's pydantic schema)
      - name: train
        tool: train
        processes: 2               # >1: launched with torchrun
        config: {data: {path: "${prep.output}"}, ...}

References: `${workdir}`, `${pipeline_dir}`, `${python_stdlib}` (the standard library folder of the interpreter
running the pipeline: real code for the demo's pretraining), `${env.NAME}` (an environment variable) and
`${<stage>.output}` for any EARLIER stage. They are substituted in
every string of a stage's config before the tool validates it, so a typo in a reference fails at load time.

`load_pipeline(..., seed=N)` (`mft run --seed N`) sets the seed of every seeded stage: `seed` of each `train`
(initialisation, data order), `synth` (the corpus) and `eval` (sampling) config, and `args.seed` of a `python` stage
that has one. The seed is part of each stage's resolved config, so its key changes and those stages rerun.
"""

from __future__ import annotations

import os
import re
import sysconfig
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")
TOOLS = ("prep", "synth", "train", "eval", "python")
RESERVED = ("env", "workdir", "pipeline_dir", "python_stdlib")
SEEDED_TOOLS = ("train", "synth", "eval")  # tools whose config has a top-level `seed`


class PipelineError(ValueError):
    """A pipeline file that cannot be run as written; the message names the file and the key."""


class StageSpec(BaseModel):
    """One stage: which tool runs it and that tool's own config."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    tool: str
    config: dict[str, Any] = Field(default_factory=dict)
    processes: int = Field(default=1, ge=1, description="training processes; >1 launches torchrun")
    metrics_task: str | None = Field(
        default=None, description="eval stages: the task name under which pass@k is reported in the summary"
    )

    @field_validator("tool")
    @classmethod
    def _known_tool(cls, value: str) -> str:
        if value not in TOOLS:
            raise ValueError(f"unknown tool {value!r}; expected one of {', '.join(TOOLS)}")
        return value

    @model_validator(mode="after")
    def _processes_only_for_train(self) -> StageSpec:
        if self.processes > 1 and self.tool != "train":
            raise ValueError(f"processes={self.processes} is only meaningful for a train stage, not {self.tool!r}")
        return self


class PipelineSpec(BaseModel):
    """The whole pipeline file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    workdir: Path
    description: str | None = None
    stages: list[StageSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_stage_names(self) -> PipelineSpec:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in RESERVED:
                raise ValueError(f"stage name {stage.name!r} is reserved for references (${{{stage.name}...}})")
            if stage.name in seen:
                raise ValueError(f"stage name {stage.name!r} is used twice")
            seen.add(stage.name)
        return self


class Pipeline:
    """A loaded pipeline: the spec plus the absolute paths its references resolve to."""

    def __init__(
        self, spec: PipelineSpec, path: Path, workdir_override: Path | None = None, seed: int | None = None
    ) -> None:
        if seed is not None:
            spec = spec.model_copy(update={"stages": [with_seed(stage, seed) for stage in spec.stages]})
        self.spec = spec
        self.seed = seed
        self.path = path.resolve()
        self.pipeline_dir = self.path.parent
        workdir = workdir_override if workdir_override is not None else spec.workdir
        self.workdir = (workdir if workdir.is_absolute() else self.pipeline_dir / workdir).resolve()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stages(self) -> list[StageSpec]:
        return self.spec.stages

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise PipelineError(f"{self.path}: no stage named {name!r}; stages are {[s.name for s in self.stages]}")

    def stage_dir(self, name: str) -> Path:
        """The default output folder of a stage (tools may put their output elsewhere if the config says so)."""
        return self.workdir / name

    def references(self, stage: StageSpec) -> list[str]:
        """Names of earlier stages this stage's config refers to with `${name.output}`."""
        found: list[str] = []
        for text in config_strings(stage.config):
            for ref in REFERENCE.findall(text):
                head = ref.split(".", 1)[0]
                if "." in ref and head != "env" and head not in found:
                    found.append(head)
        return found

    def resolve(self, stage: StageSpec, outputs: dict[str, Path]) -> dict[str, Any]:
        """The stage's config with every `${...}` replaced; `outputs` maps earlier stage names to output paths."""
        variables = {
            "workdir": str(self.workdir),
            "pipeline_dir": str(self.pipeline_dir),
            "python_stdlib": sysconfig.get_paths()["stdlib"],
        }
        variables.update({f"env.{name}": value for name, value in os.environ.items()})
        for name, out in outputs.items():
            variables[f"{name}.output"] = str(out)

        def substitute(text: str, key: str) -> str:
            def one(match: re.Match[str]) -> str:
                ref = match.group(1)
                if ref not in variables:
                    names = [s.name for s in self.stages]
                    earlier = names[: names.index(stage.name)]
                    raise PipelineError(
                        f"{self.path}: stage {stage.name!r}, key {key!r}: unknown reference ${{{ref}}}; "
                        f"expected ${{workdir}}, ${{pipeline_dir}}, ${{python_stdlib}}, ${{env.NAME}} of a set "
                        f"environment variable, or ${{<stage>.output}} of an earlier stage "
                        f"({', '.join(earlier) or 'none'})"
                    )
                return variables[ref]

            return REFERENCE.sub(one, text)

        return _map_strings(stage.config, substitute, prefix="config")


def with_seed(stage: StageSpec, seed: int) -> StageSpec:
    """The stage with its seed set to `seed` (see the module docstring); stages without a seed are unchanged."""
    config = dict(stage.config)
    if stage.tool in SEEDED_TOOLS:
        config["seed"] = seed
    elif stage.tool == "python" and isinstance(config.get("args"), dict) and "seed" in config["args"]:
        config["args"] = {**config["args"], "seed": seed}
    else:
        return stage
    return stage.model_copy(update={"config": config})


def load_pipeline(path: Path, workdir: Path | None = None, seed: int | None = None) -> Pipeline:
    """Read and validate a pipeline file; errors name the file and the key. `seed` overrides every stage's seed."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"pipeline file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping with name, workdir and stages at the top level")
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise PipelineError(f"{path}: {format_validation_error(exc)}") from exc
    pipeline = Pipeline(spec, path, workdir, seed)
    for index, stage in enumerate(pipeline.stages):
        earlier = {s.name for s in pipeline.stages[:index]}
        for ref in pipeline.references(stage):
            if ref not in earlier:
                raise PipelineError(
                    f"{path}: stage {stage.name!r} refers to ${{{ref}.output}}, which is not an earlier stage"
                )
    return pipeline


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: the dotted key, what was wrong, what was given."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        key = f"{prefix}.{key}" if prefix and key else (prefix or key)
        lines.append(f"key {key!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def config_strings(value: Any) -> list[str]:
    """Every string inside a config (nested dicts and lists), in order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in config_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in config_strings(v)]
    return []


def _map_strings(value: Any, fn: Any, prefix: str) -> Any:
    if isinstance(value, str):
        return fn(value, prefix)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn, f"{prefix}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn, f"{prefix}[{i}]") for i, v in enumerate(value)]
    return value
