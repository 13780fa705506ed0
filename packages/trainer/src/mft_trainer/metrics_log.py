"""Training metrics: `metrics.jsonl` and TensorBoard (rank 0). What stdout shows is `progress.py`.

On resume, lines of `metrics.jsonl` written after the resumed step by the interrupted run are dropped, so the file
always describes one trajectory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mft_trainer.atomic import write_text

METRICS_FILE = "metrics.jsonl"


def truncate_metrics(path: Path, after_step: int) -> None:
    """Keep only records with step <= after_step (records of a run that went past its last checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and json.loads(line).get("step", 0) <= after_step:
            kept.append(line)
    write_text(path, "".join(f"{line}\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class MetricsLogger:
    """Writes one JSON line per logged step and mirrors scalars to TensorBoard; inactive on ranks other than 0."""

    def __init__(
        self,
        output_dir: Path,
        *,
        active: bool,
        start_step: int,
        tensorboard: bool,
    ) -> None:
        self.active = active
        self._writer = None
        self.path = Path(output_dir) / METRICS_FILE
        if not active:
            return
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.path, start_step)
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.active:
            return
        record = {"step": step, **metrics}
        self._file.write(json.dumps(record, default=_json_safe) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
                elif isinstance(value, dict):
                    for sub, v in value.items():
                        if isinstance(v, int | float) and math.isfinite(v):
                            self._writer.add_scalar(f"{key}/{sub}", v, step)

    def close(self) -> None:
        if not self.active:
            return
        if self._writer is not None:
            self._writer.close()
        self._file.close()
        self.active = False  # closing twice is harmless


def _json_safe(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
