"""Shared fixtures for mft-prep tests: the sample data folder and helpers to build configs and raw files."""

from __future__ import annotations

from pathlib import Path

import pytest
from mft_dataprep.config import PrepConfig

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "mft_dataprep" / "sample_data"
@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def demo_config() -> PrepConfig:
    return PrepConfig.from_yaml(SAMPLE / "demo.yaml")
