"""Every pipeline shipped in pipelines/ validates with `mft run --dry-run` (all stage configs, no model loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mftcoder.cli import app

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "pipelines").glob("*.yaml"))


@pytest.fixture
def recipe_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-ins for the paths a GPU user sets: tiny raw files under $MFT_DATA, an empty $MFT_MODELS."""
    data = tmp_path / "data"
    data.mkdir()
    evol = [{"instruction": "Write a Python function that adds two numbers.", "output": "```python\nx = 1\n```"}]
    (data / "Evol-instruction-66k.json").write_text(json.dumps(evol))
    rounds = {"chat_rounds": [{"role": "human", "content": "hi"}, {"role": "bot", "content": "hello"}]}
    (data / "CodeExercise-Python-27k.json").write_text(json.dumps(rounds) + "\n")
    monkeypatch.setenv("MFT_DATA", str(data))
    monkeypatch.setenv("MFT_MODELS", str(tmp_path / "models"))
    return tmp_path


def test_there_are_recipes() -> None:
    names = {p.name for p in RECIPES}
    assert "demo-cpu.yaml" in names or len(names) >= 3, names


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_dry_run(recipe: Path, recipe_env: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--dry-run", str(recipe), "--workdir", str(recipe_env / "work")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("[")]
    assert lines and all("config valid" in line for line in lines), result.output


def test_missing_env_path_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MFT_DATA", raising=False)
    gpu = [p for p in RECIPES if p.name != "demo-cpu.yaml"][0]
    result = CliRunner().invoke(app, ["run", "--dry-run", str(gpu), "--workdir", str(tmp_path)])
    assert result.exit_code == 1
    assert "${env.MFT_DATA}" in result.output.replace("\n", "")
