"""The pipeline runner: skipping unchanged stages, staleness reasons, --from/--force, failures, references."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from mftcoder.pipeline import PipelineError, load_pipeline
from mftcoder.runner import StageFailed, dry_run, plan, run

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _importable_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Stages run in their own processes: they must be able to import tests/runner_steps.py.
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.setenv("MFT_TEST_COUNTERS", str(tmp_path))


def write_pipeline(tmp: Path, fail: bool = False, extra: dict | None = None) -> Path:
    (tmp / "input.txt").write_text("hello pipeline")
    spec = {
        "name": "toy",
        "workdir": "work",
        "stages": [
            {
                "name": "upper",
                "tool": "python",
                "config": {
                    "callable": "runner_steps:copy_upper",
                    "args": {"source": "${pipeline_dir}/input.txt", "counter": "upper"},
                },
            },
            {
                "name": "measure",
                "tool": "python",
                "config": {
                    "callable": "runner_steps:measure",
                    "args": {"data": "${upper.output}", "counter": "measure", "fail": fail},
                },
            },
        ],
    }
    if extra:
        spec.update(extra)
    path = tmp / "pipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def count(tmp: Path, name: str) -> int:
    path = tmp / f"{name}.count"
    return int(path.read_text()) if path.exists() else 0


def test_runs_in_order_then_skips_unchanged(tmp_path: Path) -> None:
    pipeline = load_pipeline(write_pipeline(tmp_path))
    out = io.StringIO()
    summary = run(pipeline, out=out)
    assert [s["status"] for s in summary["stages"]] == ["ran", "ran"]
    assert summary["metrics"] == {"measure": {"letters": 13.0}}
    written = json.loads((tmp_path / "work" / "pipeline_summary.json").read_text())
    assert written["stages"][1]["output"] == str(tmp_path / "work" / "measure")
    assert (tmp_path / "work" / "logs" / "upper.log").is_file()

    out = io.StringIO()
    summary = run(load_pipeline(tmp_path / "pipe.yaml"), out=out)
    assert [s["status"] for s in summary["stages"]] == ["skipped", "skipped"]
    assert "skipped, unchanged" in out.getvalue()
    assert (count(tmp_path, "upper"), count(tmp_path, "measure")) == (1, 1)


def test_changed_input_makes_stage_and_dependents_stale(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path)
    run(load_pipeline(path), out=io.StringIO())
    (tmp_path / "input.txt").write_text("changed text!")
    plans = plan(load_pipeline(path))
    assert [p.state for p in plans] == ["stale", "stale"]
    assert any("input changed" in r and r.endswith("input.txt") for r in plans[0].reasons)
    assert plans[1].reasons == ["stage 'upper' changed"]
    summary = run(load_pipeline(path), out=io.StringIO())
    assert summary["metrics"]["measure"]["letters"] == 11.0
    assert (count(tmp_path, "upper"), count(tmp_path, "measure")) == (2, 2)


def test_config_change_only_reruns_that_stage(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path)
    run(load_pipeline(path), out=io.StringIO())
    spec = yaml.safe_load(path.read_text())
    spec["stages"][1]["config"]["args"]["note"] = "x"
    spec["stages"][1]["config"]["callable"] = "runner_steps:measure"
    spec["stages"][1]["config"]["args"].pop("note")
    spec["stages"][1]["config"]["args"]["fail"] = False
    spec["stages"][1]["config"]["args"]["counter"] = "measure"
    spec["stages"][1]["metrics_task"] = "letters-task"
    path.write_text(yaml.safe_dump(spec))
    states = [p.state for p in plan(load_pipeline(path))]
    assert states == ["done", "done"]  # metrics_task is not part of the stage config
    spec["stages"][1]["config"]["args"]["counter"] = "other"
    path.write_text(yaml.safe_dump(spec))
    plans = plan(load_pipeline(path))
    assert [p.state for p in plans] == ["done", "stale"]
    assert plans[1].reasons == ["its config changed"]


def test_from_and_force(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path)
    run(load_pipeline(path), out=io.StringIO())
    run(load_pipeline(path), from_stage="measure", out=io.StringIO())
    assert (count(tmp_path, "upper"), count(tmp_path, "measure")) == (1, 2)
    run(load_pipeline(path), force=True, out=io.StringIO())
    assert (count(tmp_path, "upper"), count(tmp_path, "measure")) == (2, 3)
    with pytest.raises(PipelineError, match="no stage named 'nope'"):
        run(load_pipeline(path), from_stage="nope", out=io.StringIO())


def test_failure_names_stage_and_rerun_continues(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, fail=True)
    with pytest.raises(StageFailed, match="stage 'measure' failed") as info:
        run(load_pipeline(path), out=io.StringIO())
    assert "asked to fail" in info.value.log.read_text()
    plans = plan(load_pipeline(path))
    assert [p.state for p in plans] == ["done", "failed"]
    write_pipeline(tmp_path, fail=False)
    summary = run(load_pipeline(path), out=io.StringIO())
    assert [s["status"] for s in summary["stages"]] == ["skipped", "ran"]
    assert count(tmp_path, "upper") == 1


def test_bad_pipeline_files_name_the_key(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, extra={"stagez": []})
    with pytest.raises(PipelineError, match="stagez"):
        load_pipeline(path)
    spec = yaml.safe_load(write_pipeline(tmp_path).read_text())
    spec["stages"][1]["config"]["args"]["data"] = "${measure.output}"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(PipelineError, match=r"refers to \$\{measure.output\}, which is not an earlier stage"):
        load_pipeline(path)
    spec["stages"][1]["config"]["args"]["data"] = "${workdri}"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(PipelineError, match=r"key 'config.args.data': unknown reference \$\{workdri\}"):
        plan(load_pipeline(path))
    spec["stages"][1]["tool"] = "trian"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(PipelineError, match="unknown tool 'trian'"):
        load_pipeline(path)


def test_dry_run_validates_without_running(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path)
    out = io.StringIO()
    dry_run(load_pipeline(path), out=out)
    assert "upper (python): config valid; would run\n" in out.getvalue()
    assert count(tmp_path, "upper") == 0
    spec = yaml.safe_load(path.read_text())
    spec["stages"][0]["config"]["callable"] = "no_colon"
    path.write_text(yaml.safe_dump(spec))
    out = io.StringIO()
    with pytest.raises(PipelineError, match=r"1 of 2 stages invalid \(upper\)"):
        dry_run(load_pipeline(path), out=out)
    assert "[1/2] upper (python): invalid: python: key 'config.callable': expected 'module:function'" in out.getvalue()


def test_seed_override_sets_every_seeded_stage_and_reruns_them(tmp_path: Path) -> None:
    spec = yaml.safe_load(write_pipeline(tmp_path).read_text())
    spec["stages"].append(
        {"name": "seeded", "tool": "python",
         "config": {"callable": "runner_steps:seeded", "args": {"seed": 0, "counter": "seeded"}}}
    )
    spec["stages"] += [
        {"name": "synth", "tool": "synth", "config": {"seed": 0}},
        {"name": "train", "tool": "train", "config": {"seed": 0, "max_steps": 1}},
        {"name": "score", "tool": "eval", "config": {"model": "${train.output}"}},
    ]
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    seeded = load_pipeline(path, seed=7)
    configs = {s.name: s.config for s in seeded.stages}
    assert configs["synth"]["seed"] == configs["train"]["seed"] == configs["score"]["seed"] == 7
    assert configs["seeded"]["args"] == {"seed": 7, "counter": "seeded"}
    assert configs["upper"] == load_pipeline(path).stage("upper").config  # no seed: unchanged
    assert load_pipeline(path).stage("train").config["seed"] == 0  # the file itself is not changed

    spec["stages"] = spec["stages"][:3]  # the python stages only: they run without the packages' models
    path.write_text(yaml.safe_dump(spec))
    first = run(load_pipeline(path, seed=1), out=io.StringIO())
    assert first["seed"] == 1 and first["metrics"]["seeded"] == {"seed": 1.0}
    again = run(load_pipeline(path, seed=2), out=io.StringIO())
    assert [s["status"] for s in again["stages"]] == ["skipped", "skipped", "ran"]
    assert again["metrics"]["seeded"] == {"seed": 2.0}
    plans = plan(load_pipeline(path, seed=1))
    assert [p.state for p in plans] == ["done", "done", "stale"] and plans[2].reasons == ["its config changed"]
