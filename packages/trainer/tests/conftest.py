"""Fixtures shared by the trainer's tests (the builders behind them live in `trainer_testkit.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from trainer_testkit import tiny_tokenizer, tiny_tokenizer_dir, write_prepared_dataset


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The tiny byte-level BPE of `trainer_testkit.tiny_tokenizer` (trained once per machine, then cached)."""
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return tiny_tokenizer_dir()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Contract-1 prepared dataset of three chat tasks of unequal sizes, written once per test module."""
    return write_prepared_dataset(tmp_path_factory.mktemp("prepared") / "ds")
