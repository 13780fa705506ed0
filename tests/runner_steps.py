"""Small `tool: python` stage functions used by the runner tests (imported by the stage's own process)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _count(counter: str) -> None:
    # Counters live outside the config's paths (in $MFT_TEST_COUNTERS), so they are no input of the stage.
    path = Path(os.environ["MFT_TEST_COUNTERS"]) / f"{counter}.count"
    path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))


def copy_upper(output: Path, source: str, counter: str) -> None:
    """Read a text file, write it upper-cased under `output`."""
    _count(counter)
    output.mkdir(parents=True, exist_ok=True)
    (output / "data.txt").write_text(Path(source).read_text().upper())


def measure(output: Path, data: str, counter: str, fail: bool = False) -> None:
    """Count the letters of the previous stage's output and report it as a metric."""
    _count(counter)
    if fail:
        raise RuntimeError("asked to fail")
    text = (Path(data) / "data.txt").read_text()
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps({"letters": sum(c.isalpha() for c in text)}))


def seeded(output: Path, seed: int, counter: str) -> None:
    """Write the seed it was given as a metric (the `--seed` override tests)."""
    _count(counter)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps({"seed": seed}))


def pair(output: Path, data: str, weight: float, counter: str) -> None:
    """A matrix cell: reads its seed's stage output, reports that seed and its arm's weight."""
    _count(counter)
    seed = json.loads((Path(data) / "metrics.json").read_text())["seed"]
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps({"seed": seed, "weight": weight}))


def record_env(output: Path, names: list[str]) -> None:
    """Write the stage's values of some environment variables (the stage-environment tests)."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "env.json").write_text(json.dumps({name: os.environ.get(name) for name in names}))
