"""Stage matrices: one pipeline stage per cell of some axes (seed × arm), shared stages run once, cells cached."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mftcoder.cli import app
from mftcoder.pipeline import PipelineError, load_pipeline
from mftcoder.runner import plan, run

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _importable_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.setenv("MFT_TEST_COUNTERS", str(tmp_path))


def matrix_spec(tmp: Path) -> dict:
    (tmp / "input.txt").write_text("shared")
    return {
        "name": "grid",
        "workdir": "work",
        "matrix": {"seed": [0, 1], "arm": {"a": {"weight": 1.5}, "b": {"weight": 2.5}}},
        "stages": [
            {"name": "shared", "tool": "python", "config": {
                "callable": "runner_steps:copy_upper",
                "args": {"source": "${pipeline_dir}/input.txt", "counter": "shared"}}},
            {"name": "seeded", "tool": "python", "matrix": ["seed"], "config": {
                "callable": "runner_steps:seeded", "args": {"seed": "${matrix.seed}", "counter": "seeded"}}},
            {"name": "cell", "tool": "python", "matrix": ["seed", "arm"], "config": {
                "callable": "runner_steps:pair",
                "args": {"data": "${seeded.output}", "weight": "${matrix.arm.weight}",
                         "counter": "cell-${matrix.arm}"}}},
            {"name": "last", "tool": "python", "after": ["cell"], "config": {
                "callable": "runner_steps:copy_upper",
                "args": {"source": "${shared.output}/data.txt", "counter": "last"}}},
        ],
    }


def write(tmp: Path, spec: dict) -> Path:
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def count(tmp: Path, name: str) -> int:
    path = tmp / f"{name}.count"
    return int(path.read_text()) if path.exists() else 0


def test_matrix_expands_into_cells_with_typed_values_and_matching_references(tmp_path: Path) -> None:
    pipeline = load_pipeline(write(tmp_path, matrix_spec(tmp_path)))
    names = [s.name for s in pipeline.stages]
    assert names == [
        "shared", "seeded.seed-0", "seeded.seed-1",
        "cell.seed-0.arm-a", "cell.seed-0.arm-b", "cell.seed-1.arm-a", "cell.seed-1.arm-b", "last",
    ]
    cell = pipeline.stage("cell.seed-1.arm-b")
    assert cell.base == "cell" and cell.cell == {"seed": "1", "arm": "b"}
    assert cell.config["args"] == {"data": "${seeded.seed-1.output}", "weight": 2.5, "counter": "cell-b"}
    assert pipeline.stage("seeded.seed-1").config["args"]["seed"] == 1  # the value itself, not "1"
    assert pipeline.references(pipeline.stage("last")) == ["shared", *names[3:7]]


def test_matrix_runs_shared_stages_once_and_reruns_only_changed_cells(tmp_path: Path) -> None:
    spec = matrix_spec(tmp_path)
    path = write(tmp_path, spec)
    summary = run(load_pipeline(path), out=io.StringIO())
    assert [s["status"] for s in summary["stages"]] == ["ran"] * 8
    assert summary["metrics"]["cell.seed-1.arm-b"] == {"seed": 1.0, "weight": 2.5}
    assert (count(tmp_path, "shared"), count(tmp_path, "seeded"), count(tmp_path, "cell-a")) == (1, 2, 2)

    spec["matrix"]["arm"]["b"]["weight"] = 3.0
    path = write(tmp_path, spec)
    states = {p.stage.name: p.state for p in plan(load_pipeline(path))}
    assert [n for n, s in states.items() if s != "done"] == ["cell.seed-0.arm-b", "cell.seed-1.arm-b", "last"]
    summary = run(load_pipeline(path), out=io.StringIO())
    assert [s["stage"] for s in summary["stages"] if s["status"] == "ran"] == [
        "cell.seed-0.arm-b", "cell.seed-1.arm-b", "last"]
    assert (count(tmp_path, "shared"), count(tmp_path, "cell-a"), count(tmp_path, "cell-b")) == (1, 2, 4)

    result = CliRunner().invoke(app, ["status", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "matrix: seed (2), arm (2)" in result.output
    row = next(line for line in result.output.splitlines() if "│ cell " in line)
    assert "seed × arm" in row and "4" in row


def test_matrix_errors_name_the_stage_and_key(tmp_path: Path) -> None:
    spec = matrix_spec(tmp_path)
    spec["stages"][3]["config"]["args"]["source"] = "${cell.output}"
    with pytest.raises(PipelineError, match=r"'last'.*\$\{cell.output\} is a matrixed stage over axes \['seed', 'arm'\]"
                       r".*e.g. \$\{cell.seed-0.arm-a.output\}"):
        load_pipeline(write(tmp_path, spec))
    spec["stages"][3]["config"]["args"]["source"] = "${cell.seed-1.arm-a.output}/metrics.json"
    assert load_pipeline(write(tmp_path, spec)).stage("last").config["args"]["source"].startswith(
        "${cell.seed-1.arm-a.output}")

    spec = matrix_spec(tmp_path)
    spec["stages"][1]["config"]["args"]["seed"] = "${matrix.arm}"
    with pytest.raises(PipelineError, match=r"stage 'seeded', key 'config.args.seed': \$\{matrix.arm\} but the "
                       r"stage's matrix is \['seed'\]"):
        load_pipeline(write(tmp_path, spec))
    spec = matrix_spec(tmp_path)
    spec["stages"][2]["config"]["args"]["weight"] = "${matrix.arm.wieght}"
    with pytest.raises(PipelineError, match=r"value 'a' has no field 'wieght' \(it has \['weight'\]\)"):
        load_pipeline(write(tmp_path, spec))
    spec = matrix_spec(tmp_path)
    spec["stages"][2]["matrix"] = ["seed", "arms"]
    with pytest.raises(PipelineError, match=r"matrix axes \['arms'\] are not in the pipeline's matrix"):
        load_pipeline(write(tmp_path, spec))
    spec = matrix_spec(tmp_path)
    spec["stages"][1]["after"] = ["cell"]
    with pytest.raises(PipelineError, match="refers to after: 'cell'|not an earlier stage"):
        load_pipeline(write(tmp_path, spec))
