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

A stage matrix runs one stage for every combination of some axes without copying it::

    matrix:                        # the axes; a value is a name, or a name with fields
      seed: [0, 1, 2]
      arm:
        sft-mixed: {loss: {mode: token}}
        mft-task: {loss: {mode: task}}
    stages:
      - {name: tokenizer, ...}     # no `matrix`: runs once, every cell shares it
      - name: synth
        matrix: [seed]             # one stage per seed: synth.seed-0, synth.seed-1, synth.seed-2
        config: {seed: "${matrix.seed}"}
      - name: train
        matrix: [seed, arm]        # train.seed-0.arm-sft-mixed, ...
        config: {loss: "${matrix.arm.loss}", data: {path: "${prep.output}"}, seed: "${matrix.seed}"}
      - name: collect
        after: [train]             # depends on every cell of train (their keys are part of its key)

In a cell, `${matrix.AXIS}` is the value's name and `${matrix.AXIS.FIELD}` one of its fields; a string that is
only such a reference takes the value itself (a number, a mapping), otherwise it is substituted as text.
`${X.output}` of a matrixed stage X means the cell of X with the same values on X's axes (the referring stage must
have all of them); any cell can be named outright, `${synth.seed-1.output}`, also with matrix references inside
(`${train.seed-${matrix.seed}.arm-sft-mixed.output}`). Cells are ordinary stages, each with its own key and
record: changing one arm reruns only that arm's cells.

`load_pipeline(..., seed=N)` (`mft run --seed N`) sets the seed of every seeded stage: `seed` of each `train`
(initialisation, data order), `synth` (the corpus) and `eval` (sampling) config, and `args.seed` of a `python` stage
that has one. The seed is part of each stage's resolved config, so its key changes and those stages rerun.
"""

from __future__ import annotations

import itertools
import os
import re
import sysconfig
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")
MATRIX_REFERENCE = re.compile(r"\$\{matrix\.([A-Za-z0-9_\-]+)(?:\.([A-Za-z0-9_\-]+))?\}")
MATRIX_VALUE = re.compile(r"^[A-Za-z0-9_\-]+$")
TOOLS = ("prep", "synth", "train", "eval", "python")
RESERVED = ("env", "workdir", "pipeline_dir", "python_stdlib", "matrix")
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
    matrix: list[str] | None = Field(default=None, description="axes of the pipeline's matrix to run this stage over")
    after: list[str] = Field(default_factory=list, description="earlier stages (every cell) this one depends on")
    # Set when a matrixed stage is expanded: the stage it comes from and this cell's value names per axis.
    base: str | None = None
    cell: dict[str, str] | None = None

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
    matrix: dict[str, list[str | int] | dict[str, dict[str, Any]]] = Field(default_factory=dict)
    stages: list[StageSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _matrix_axes(self) -> PipelineSpec:
        for axis, values in self.matrix.items():
            if not MATRIX_VALUE.match(axis) or not values:
                raise ValueError(f"matrix axis {axis!r}: expected a name and at least one value")
            names = [str(v) for v in values]
            bad = [n for n in names if not MATRIX_VALUE.match(n)]
            if bad or len(set(names)) != len(names):
                raise ValueError(f"matrix.{axis}: values must be distinct names of A-Z a-z 0-9 _ -, got {names}")
        for stage in self.stages:
            unknown = [a for a in stage.matrix or [] if a not in self.matrix]
            if unknown:
                raise ValueError(f"stage {stage.name!r}: matrix axes {unknown} are not in the pipeline's matrix")
        return self

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
        """Names of earlier stages this stage's config refers to with `${name.output}`, then its `after` stages."""
        found: list[str] = []
        for text in config_strings(stage.config):
            for ref in REFERENCE.findall(text):
                if ref.endswith(".output") and not ref.startswith("env.") and ref[: -len(".output")] not in found:
                    found.append(ref[: -len(".output")])
        return found + [name for name in stage.after if name not in found]

    def cells(self, base: str) -> list[StageSpec]:
        """The stages a (possibly matrixed) stage of the file became: its cells, or itself."""
        return [s for s in self.stages if (s.base or s.name) == base]

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


def _matrix_value(spec: PipelineSpec, axis: str, name: str) -> tuple[str | int, dict[str, Any]]:
    values = spec.matrix[axis]
    if isinstance(values, dict):
        return name, values[name] or {}
    return next(v for v in values if str(v) == name), {}


def cell_name(base: str, cell: dict[str, str]) -> str:
    return base + "".join(f".{axis}-{value}" for axis, value in cell.items())


def expand_matrix(spec: PipelineSpec, path: Path) -> PipelineSpec:
    """One stage per cell of every matrixed stage (module docstring); `after` lists name every cell."""
    cells_of: dict[str, list[tuple[str, dict[str, str] | None]]] = {}
    stages: list[StageSpec] = []
    for stage in spec.stages:
        axes = stage.matrix or []
        combos = itertools.product(*([str(v) for v in spec.matrix[a]] for a in axes)) if axes else [()]
        cells = []
        for combo in combos:
            cell = dict(zip(axes, combo, strict=True))

            def fill(text: str, key: str, cell: dict[str, str] = cell, stage: StageSpec = stage) -> Any:
                def lookup(match: re.Match[str]) -> Any:
                    axis, field = match.group(1), match.group(2)
                    if axis not in cell:
                        raise PipelineError(
                            f"{path}: stage {stage.name!r}, key {key!r}: ${{matrix.{axis}}} but the stage's matrix "
                            f"is {list(cell) or 'not set'}"
                        )
                    value, fields = _matrix_value(spec, axis, cell[axis])
                    if field is None:
                        return value
                    if field not in fields:
                        raise PipelineError(
                            f"{path}: stage {stage.name!r}, key {key!r}: matrix.{axis} value {cell[axis]!r} has no "
                            f"field {field!r} (it has {sorted(fields)})"
                        )
                    return fields[field]

                whole = MATRIX_REFERENCE.fullmatch(text)
                if whole:
                    return lookup(whole)
                return MATRIX_REFERENCE.sub(lambda m: str(lookup(m)), text)

            config = _map_strings(stage.config, fill, prefix="config") if axes else stage.config
            config = _map_strings(
                config,
                lambda text, key, cell=cell, stage=stage: _to_cells(text, key, cell, stage, cells_of, path)
                if isinstance(text, str) else text,
                prefix="config",
            )
            metrics_task = stage.metrics_task
            if metrics_task and axes:
                metrics_task = str(fill(metrics_task, "metrics_task"))
            after = [name for base in stage.after for name, _ in cells_of.get(base, [(base, None)])]
            cells.append(stage.model_copy(update={
                "name": cell_name(stage.name, cell) if axes else stage.name, "config": config,
                "metrics_task": metrics_task, "after": after,
                "base": stage.name if axes else None, "cell": cell if axes else None,
            }))
        cells_of[stage.name] = [(c.name, c.cell) for c in cells]
        stages += cells
    return spec.model_copy(update={"stages": stages})


def _to_cells(
    text: str, key: str, cell: dict[str, str], stage: StageSpec,
    cells_of: dict[str, list[tuple[str, dict[str, str]]]], path: Path,
) -> str:
    """`${X.output}` of a matrixed stage X -> the cell of X with this cell's values on X's axes."""

    def one(match: re.Match[str]) -> str:
        ref = match.group(1)
        base = ref[: -len(".output")] if ref.endswith(".output") else ""
        cells = cells_of.get(base)
        if not cells or cells[0][1] is None:  # not a stage, or a stage without matrix
            return match.group(0)
        same = [name for name, values in cells if all(cell.get(a) == v for a, v in values.items())]
        if len(same) != 1:
            raise PipelineError(
                f"{path}: stage {stage.name!r}, key {key!r}: ${{{ref}}} is a matrixed stage over axes "
                f"{list(cells[0][1])}, which this stage does not all have; name one of its cells, "
                f"e.g. ${{{cells[0][0]}.output}}"
            )
        return "${" + same[0] + ".output}"

    return REFERENCE.sub(one, text)


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
    pipeline = Pipeline(expand_matrix(spec, path), path, workdir, seed)
    for index, stage in enumerate(pipeline.stages):
        earlier = {s.name for s in pipeline.stages[:index]}
        for ref in pipeline.references(stage):
            if ref not in earlier:
                what = f"after: {ref!r}" if ref in stage.after else f"${{{ref}.output}}"
                raise PipelineError(f"{path}: stage {stage.name!r} refers to {what}, which is not an earlier stage")
    return pipeline


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Each problem as `key 'dotted.key': what was wrong`, in the tools' own wording (`unknown key`, `required key
    is missing`, a validator's message with what was given), joined with '; '."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        key = f"{prefix}.{key}" if prefix and key else (prefix or key)
        if err["type"] == "extra_forbidden":
            what = "unknown key"
        elif err["type"] == "missing":
            what = "required key is missing"
        else:
            given = repr(err.get("input"))
            what = err["msg"].removeprefix("Value error, ") + (f" (got {given})" if key and len(given) <= 80 else "")
        lines.append(f"key {key!r}: {what}" if key else what)
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
