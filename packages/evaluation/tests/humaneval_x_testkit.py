"""Shared by the HumanEval-X tests: a language's data and toolchain, or a skip with the reason.

Under CI=true a missing data file or toolchain is a failure instead: CI must score all five languages.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from mft_eval.humaneval_x.dataset import default_path
from mft_eval.humaneval_x.runner import ToolchainMissing, require_toolchain


def need_language(lang: str) -> Any:
    """The language's toolchain (what `require_toolchain` returns); skip, or fail under CI=true, without it."""
    ci = os.environ.get("CI") == "true"
    if not default_path(lang).is_file():
        if ci:
            pytest.fail(f"{default_path(lang)} is missing (shared data is required under CI=true)")
        pytest.skip(f"shared data not found: {default_path(lang)}")
    try:
        return require_toolchain(lang)
    except ToolchainMissing as exc:
        if ci:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
