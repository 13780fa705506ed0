"""Early stopping: patience in validations, best step, NaN never improves, exact state round trip."""

from __future__ import annotations

import json
import math

import pytest
from mft_trainer.loss.early_stopping import EarlyStopping


def test_patience_counts_validations_without_a_new_best():
    es = EarlyStopping(patience=2, min_delta=0.01)
    assert es.update(100, 2.0)
    assert es.update(200, 1.5)
    assert not es.update(300, 1.495)  # within min_delta: not an improvement
    assert not es.should_stop
    assert not es.update(400, 1.6)
    assert es.should_stop and es.best_step == 200 and es.best_value == 1.5


def test_nan_never_improves_and_no_patience_never_stops():
    es = EarlyStopping(patience=None)
    assert es.update(1, 3.0)
    for step in range(2, 50):
        assert not es.update(step, math.nan if step % 2 else 4.0)
    assert not es.should_stop and es.best_step == 1


def test_state_round_trip():
    es = EarlyStopping(patience=3)
    for step, v in enumerate([3.0, 2.0, 2.5, 2.6]):
        es.update(step, v)
    resumed = EarlyStopping(patience=3)
    resumed.load_state_dict(json.loads(json.dumps(es.state_dict())))
    assert not resumed.update(4, 2.1)
    assert resumed.should_stop and resumed.best_step == 1


def test_bad_settings():
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
