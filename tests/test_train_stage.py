"""The pipeline's train tool: a stale or forced rerun replaces the stage's finished run instead of refusing."""

from __future__ import annotations

import json
from pathlib import Path

from trainer_testkit import tiny_config, write_prepared_dataset

from mftcoder.tools import _train_run


def test_rerun_of_a_finished_train_stage_replaces_it(tmp_path: Path) -> None:
    dataset = write_prepared_dataset(tmp_path / "ds")
    _train_run(tiny_config(tmp_path, dataset, max_steps=2))
    record = tmp_path / "out" / "final" / "mft_train.json"
    assert json.loads(record.read_text())["step"] == 2
    # The runner reruns a finished stage only when its config changed (or --force): the trainer alone would refuse
    # an output_dir holding a finished run; the stage starts over and replaces final/.
    _train_run(tiny_config(tmp_path, dataset, max_steps=3, optimizer__lr=5e-3))
    assert json.loads(record.read_text())["step"] == 3
