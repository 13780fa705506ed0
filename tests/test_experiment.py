"""The balancing experiment end to end, reduced (slow: a few minutes on 2 cores): `pipelines/experiment-cpu.yaml`
with one seed, three arms (SFT-single, SFT-mixed, MFT with FAMO), two SFT-single tasks, the unseen task, a tiny
tokenizer and a few steps. It checks the pipeline file itself (the reduction only shrinks sizes and axes), the
stage matrix, the results file, the table and the plots, and that a rerun skips every cell.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import yaml

from mftcoder.pipeline import load_pipeline
from mftcoder.runner import run

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "pipelines" / "experiment-cpu.yaml"


def reduced(tmp: Path) -> Path:
    spec = yaml.safe_load(EXPERIMENT.read_text(encoding="utf-8"))
    spec["workdir"] = str(tmp / "experiment")
    matrix = spec["matrix"]
    matrix["seed"] = [0]
    matrix["arm"] = {"sft-mixed": matrix["arm"]["sft-mixed"], "mft-famo": matrix["arm"]["mft-famo"]}
    matrix["task"] = {"text_to_code": {**matrix["task"]["text_to_code"], "valid": 4, "steps": 5, "warmup": 1},
                      "translation": {**matrix["task"]["translation"], "valid": 4, "steps": 2, "warmup": 1}}
    matrix["scored"] = {t: matrix["scored"][t] for t in ("text_to_code", "rewrite")}
    stages = {s["name"]: s for s in spec["stages"]}
    stages["tokenizer"]["config"]["args"].update(vocab_size=1024, max_bytes=400_000)
    stages["prep-stdlib"]["config"]["max_chars"] = 40_000
    stages["pretrain"]["config"].update(max_steps=4, save_every=4, micro_batch_size=4,
                                        schedule={"kind": "cosine", "warmup_steps": 1, "min_lr": 3.0e-4})
    synth = stages["synth"]["config"]
    synth["scale"] = 0.05
    synth["heldout_counts"] = {"text_to_code": 3, "translation": 0, "unit_tests": 0, "rewrite": 3}
    for task in stages["prep"]["config"]["tasks"]:
        task["split"] = {"valid_count": 4}
    for name in ("train", "train-single"):  # YAML merge keys (<<: *train) copy the mapping: shrink each
        stages[name]["config"].update(eval_every=3, micro_batch_size=2, seq_length=256)
    # SFT-single's steps and warmup come from the task axis (its share of the arm's steps)
    stages["train"]["config"].update(max_steps=6, schedule={"kind": "cosine", "warmup_steps": 1, "min_lr": 4.0e-4})
    for name in ("eval", "eval-single"):
        stages[name]["config"].update(max_new_tokens=24, batch_size=8)
    stages["collect"]["config"]["args"]["pipeline"] = str(tmp / "experiment.yaml")
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_reduced_experiment_writes_results_table_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFT_CACHE_DIR", str(tmp_path / "cache"))
    path = reduced(tmp_path)
    pipeline = load_pipeline(path)
    names = [s.name for s in pipeline.stages]
    assert "train.seed-0.arm-mft-famo" in names and "train-single.seed-0.task-translation" in names
    assert "eval-single.seed-0.scored-rewrite" in names
    assert pipeline.stage("eval-single.seed-0.scored-rewrite").config["model"] == (
        "${train-single.seed-0.task-text_to_code.output}"  # the unseen task, answered by the text_to_code model
    )
    assert pipeline.stage("train-single.seed-0.task-text_to_code").config["max_steps"] == 5
    assert pipeline.stage("train-single.seed-0.task-translation").config["schedule"]["warmup_steps"] == 1
    summary = run(pipeline, out=io.StringIO())
    assert {s["status"] for s in summary["stages"]} == {"ran"}

    out = tmp_path / "experiment" / "collect"
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["seeds"] == [0] and results["steps"] == 6 and results["unseen"] == ["rewrite"]
    assert results["single_steps"] == {"text_to_code": 5, "translation": 2}
    assert list(results["arms"]) == ["sft-single", "sft-mixed", "mft-famo"]
    for arm, per_task in results["arms"].items():
        for task in ("text_to_code", "rewrite"):
            (value,) = per_task[task]["pass@1"]
            assert 0.0 <= value <= 1.0, (arm, task)
        for task in ("text_to_code", "translation"):
            (loss,) = per_task[task]["valid_loss"]
            assert math.isfinite(loss) and 0 < loss < math.log(1024) + 3, (arm, task, loss)
        assert per_task["rewrite"]["valid_loss"] == [None]  # no model trains on it: no validation split
        assert results["train_seconds"][arm][0] > 0
    table = (out / "results.md").read_text(encoding="utf-8")
    assert table.startswith("| arm | text_to_code pass@1 | rewrite pass@1 |") and "| mft-famo |" in table
    assert "(SFT-single's models: text_to_code 5, translation 2)" in table
    for name in ("text_to_code.pass@1", "rewrite.pass@1", "text_to_code.valid_loss", "translation.valid_loss"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    famo = tmp_path / "experiment" / "train.seed-0.arm-mft-famo" / "final" / "mft_train.json"
    assert json.loads(famo.read_text(encoding="utf-8"))["loss_mode"] == "famo"

    again = run(load_pipeline(path), out=io.StringIO())
    assert {s["status"] for s in again["stages"]} == {"skipped"}
