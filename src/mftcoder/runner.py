"""Run a pipeline: plan which stages are up to date, run the others in order, record each, write the summary.

Each stage runs in its own process (`python -m mftcoder.stage_exec`, or `torchrun` when a training stage asks for
several processes) so that one stage's threads, memory and CUDA state cannot leak into the next; its output is shown
live and copied to `<workdir>/logs/<stage>.log`. A stage is skipped when its key (fingerprint.py) matches the record
of a completed run and its output still exists. A failure names the stage and its log; earlier stages' outputs and
records stay valid, so the next `mft run` continues with the failed stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mftcoder import __version__
from mftcoder.fingerprint import canonical_json, referenced_paths, sha256_text, stage_key
from mftcoder.pipeline import Pipeline, PipelineError, StageSpec
from mftcoder.state import StageRecord, read_record, write_json_atomic, write_record
from mftcoder.tools import get_tool


class StageFailed(RuntimeError):
    """A stage exited with an error; the message names it and its log."""

    def __init__(self, stage: str, log: Path, detail: str) -> None:
        super().__init__(f"stage {stage!r} failed: {detail}; see its log {log}")
        self.stage = stage
        self.log = log


@dataclass
class StagePlan:
    stage: StageSpec
    config: dict[str, Any]
    output: Path
    key: str
    config_hash: str
    upstream: dict[str, str]
    inputs: dict[str, str]
    record: StageRecord | None
    state: str  # "done" | "stale" | "not run" | "failed"
    reasons: list[str] = field(default_factory=list)


def plan(pipeline: Pipeline) -> list[StagePlan]:
    """Resolve every stage's config and key, and compare with what was recorded. Imports no tool package."""
    outputs: dict[str, Path] = {}
    keys: dict[str, str] = {}
    plans: list[StagePlan] = []
    for stage in pipeline.stages:
        tool = get_tool(stage.tool)
        config = dict(stage.config)
        config.setdefault(tool.output_key, str(pipeline.stage_dir(stage.name)))
        resolved = pipeline.resolve(stage.model_copy(update={"config": config}), outputs)
        output = tool.output_of(resolved, pipeline.pipeline_dir)
        upstream = {name: keys[name] for name in pipeline.references(stage)}
        own_output = Path(resolved[tool.output_key])
        own_output = own_output if own_output.is_absolute() else pipeline.pipeline_dir / own_output
        inputs = referenced_paths(resolved, pipeline.pipeline_dir, exclude=[*outputs.values(), own_output])
        key = stage_key(stage.tool, resolved, upstream, inputs, __version__)
        record = read_record(pipeline.workdir, stage.name)
        state, reasons = _compare(record, key, resolved, upstream, inputs, output)
        plans.append(
            StagePlan(stage, resolved, output, key, sha256_text(canonical_json(resolved)), upstream, inputs, record,
                      state, reasons)
        )
        outputs[stage.name] = output
        keys[stage.name] = key
    return plans


def _compare(
    record: StageRecord | None,
    key: str,
    config: dict[str, Any],
    upstream: dict[str, str],
    inputs: dict[str, str],
    output: Path,
) -> tuple[str, list[str]]:
    if record is None:
        return "not run", []
    if record.status == "failed":
        return "failed", [record.error or "the last run failed"]
    if record.status != "done":
        return "not run", ["the last run did not finish"]
    if record.key == key and output.exists():
        return "done", []
    reasons: list[str] = []
    if record.config_hash != sha256_text(canonical_json(config)):
        reasons.append("its config changed")
    for name, upstream_key in upstream.items():
        if record.upstream.get(name) != upstream_key:
            reasons.append(f"stage {name!r} changed")
    for path, fingerprint in inputs.items():
        if path not in record.inputs:
            reasons.append(f"new input {path}")
        elif record.inputs[path] != fingerprint:
            reasons.append(f"input changed: {path}")
    for path in record.inputs:
        if path not in inputs:
            reasons.append(f"input gone: {path}")
    if not output.exists():
        reasons.append(f"its output {output} is missing")
    return "stale", reasons or ["the runner version changed"]


def _why(item: StagePlan) -> str:
    """` (stale: its config changed)`, ` (failed: ...)`, or nothing for a stage that never ran."""
    if item.state == "not run" and not item.reasons:
        return ""
    return f" ({item.state}" + (": " + "; ".join(item.reasons) if item.reasons else "") + ")"


def dry_run(pipeline: Pipeline, out: TextIO | None = None) -> list[StagePlan]:
    """Validate every stage's config with its tool's schema, loading no model; say what a run would do. Every
    invalid stage is reported on its line; then a PipelineError names them all."""
    out = out if out is not None else sys.stdout
    plans = plan(pipeline)
    produced = {p.stage.name: p.output for p in plans}
    invalid: list[str] = []
    for index, item in enumerate(plans):
        tool = get_tool(item.stage.tool)
        pending = [
            name for name in pipeline.references(item.stage)
            if not produced[name].exists()
        ]
        header = f"[{index + 1}/{len(plans)}] {item.stage.name} ({item.stage.tool})"
        try:
            tool.validate(item.config, pipeline.pipeline_dir)
            verdict = "config valid"
        except PipelineError as exc:
            message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
            waits_for = [name for name in pending if str(produced[name]) in message]
            if not waits_for:
                invalid.append(item.stage.name)
                out.write(f"{header}: invalid: {message}\n")
                continue
            verdict = f"config valid except for inputs that {', '.join(waits_for)} will produce"
        action = "skip (unchanged)" if item.state == "done" else f"run{_why(item)}"
        out.write(f"{header}: {verdict}; would {action}\n")
    if invalid:
        raise PipelineError(
            f"{pipeline.path}: {len(invalid)} of {len(plans)} stage{'s' if len(plans) != 1 else ''} invalid "
            f"({', '.join(invalid)}); each is named above"
        )
    return plans


def run(
    pipeline: Pipeline,
    *,
    force: bool = False,
    from_stage: str | None = None,
    out: TextIO | None = None,
    debug: bool = False,
) -> dict[str, Any]:
    """Run the pipeline; returns (and writes) the pipeline summary. `debug`: stages print tracebacks (MFT_DEBUG)."""
    out = out if out is not None else sys.stdout
    if from_stage is not None:
        pipeline.stage(from_stage)  # names an existing stage or raises
    plans = plan(pipeline)
    forced = False
    results: list[dict[str, Any]] = []
    for index, item in enumerate(plans):
        name = item.stage.name
        forced = forced or force or name == from_stage  # --from reruns that stage and every later one
        header = f"[{index + 1}/{len(plans)}] {name} ({item.stage.tool})"
        if item.state == "done" and not forced:
            out.write(f"{header}: skipped, unchanged since its last run ({item.output})\n")
            out.flush()
            results.append(_result(item, "skipped", item.record.duration if item.record else 0.0))
            continue
        out.write(f"{header}: running{' (forced)' if forced else _why(item)}\n")
        out.flush()
        duration = _execute(pipeline, item, out, debug)
        results.append(_result(item, "ran", duration))
    summary = _summary(pipeline, plans, results)
    write_json_atomic(pipeline.workdir / "pipeline_summary.json", summary)
    return summary


def _execute(pipeline: Pipeline, item: StagePlan, out: TextIO, debug: bool = False) -> float:
    workdir = pipeline.workdir
    log_path = workdir / "logs" / f"{item.stage.name}.log"
    spec_path = workdir / ".mft" / "specs" / f"{item.stage.name}.json"
    write_json_atomic(
        spec_path, {"tool": item.stage.tool, "config": item.config, "base_dir": str(pipeline.pipeline_dir)}
    )
    record = StageRecord(
        stage=item.stage.name, tool=item.stage.tool, status="running", key=item.key,
        config_hash=item.config_hash, upstream=item.upstream, inputs=item.inputs, output=str(item.output),
        started=time.time(), log=str(log_path),
    )
    write_record(workdir, record)
    command = _command(item, spec_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    returncode, last_error = _tee(command, log_path, out, stage_environment(debug))
    record.finished = time.time()
    if returncode != 0:
        record.status = "failed"
        record.error = f"exit status {returncode}" + (f": {last_error}" if last_error else "")
        write_record(workdir, record)
        raise StageFailed(item.stage.name, log_path, record.error)
    if not item.output.exists():
        record.status = "failed"
        record.error = f"finished without writing its output {item.output}"
        write_record(workdir, record)
        raise StageFailed(item.stage.name, log_path, record.error)
    record.status = "done"
    write_record(workdir, record)
    out.write(f"    done in {record.duration:.1f} s -> {item.output}\n")
    out.flush()
    return record.duration


def _command(item: StagePlan, spec_path: Path) -> list[str]:
    if item.stage.processes > 1:
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={item.stage.processes}", "-m", "mftcoder.stage_exec", str(spec_path),
        ]
    return [sys.executable, "-m", "mftcoder.stage_exec", str(spec_path)]


def stage_environment(debug: bool = False) -> dict[str, str]:
    """A stage's environment: ours, unbuffered output, OMP_WAIT_POLICY=PASSIVE unless the user set it (waiting
    OpenMP threads sleep instead of spinning: 0.97x instead of 0.11x the speed of one thread on a machine with other
    work, docs/experiments.md), and MFT_DEBUG=1 with `mft --debug`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if debug:
        env["MFT_DEBUG"] = "1"
    return env


def _tee(command: list[str], log_path: Path, out: TextIO, env: dict[str, str]) -> tuple[int, str | None]:
    """Run a command, copying its combined output to the console and the log as it comes (progress bars too).
    Returns its exit status and its last `error: ...` line, if any."""
    tail = b""
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        assert process.stdout is not None
        sink = getattr(out, "buffer", None)
        try:
            while chunk := process.stdout.read1(65536):
                tail = (tail + chunk)[-8192:]
                log.write(chunk)
                if sink is not None:
                    sink.write(chunk)
                    sink.flush()
                else:
                    out.write(chunk.decode("utf-8", errors="replace"))
        except KeyboardInterrupt:
            process.terminate()
            process.wait()
            raise
        errors = [line for line in tail.decode("utf-8", errors="replace").splitlines() if line.startswith("error: ")]
        return process.wait(), errors[-1].removeprefix("error: ") if errors else None


def _result(item: StagePlan, status: str, duration: float) -> dict[str, Any]:
    return {
        "stage": item.stage.name,
        "tool": item.stage.tool,
        "status": status,
        "duration_s": round(duration, 3),
        "output": str(item.output),
    }


def _summary(pipeline: Pipeline, plans: list[StagePlan], results: list[dict[str, Any]]) -> dict[str, Any]:
    metrics: dict[str, dict[str, float]] = {}
    for item in plans:
        tool = get_tool(item.stage.tool)
        values = tool.metrics(item.output)
        if item.stage.tool == "eval":
            task = item.stage.metrics_task or item.stage.name
            metrics.setdefault(task, {}).update(values)
        elif item.stage.tool == "train":
            for dotted, value in values.items():
                task, _, metric = dotted.rpartition(".")
                if item.stage.cell is not None:  # a matrix cell: its own row, not the task's shared one
                    task = f"{item.stage.name}/{task}"
                metrics.setdefault(task, {})[metric] = value
        elif values:
            metrics.setdefault(item.stage.name, {}).update(values)
    plots = sorted(str(p) for p in pipeline.workdir.rglob("*.png") if ".mft" not in p.parts)
    return {
        "pipeline": pipeline.name,
        "file": str(pipeline.path),
        "workdir": str(pipeline.workdir),
        "seed": pipeline.seed,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": results,
        "metrics": dict(sorted(metrics.items())),
        "plots": plots,
    }


def load_summary(pipeline: Pipeline) -> dict[str, Any] | None:
    path = pipeline.workdir / "pipeline_summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
