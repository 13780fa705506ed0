"""Training metrics: a rich progress bar (step, loss, tokens/s, ETA, per-task losses and weights), `metrics.jsonl`
and TensorBoard (rank 0).

On resume, lines of `metrics.jsonl` written after the resumed step by the interrupted run are dropped, so the file
always describes one trajectory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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
        total_steps: int,
        start_step: int,
        tensorboard: bool,
        progress: bool,
        task_names: list[str],
    ) -> None:
        self.active = active
        self.task_names = task_names
        self._writer = None
        self._progress: Progress | None = None
        self._task_id = None
        self.path = Path(output_dir) / METRICS_FILE
        if not active:
            return
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.path, start_step)
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"), purge_step=start_step + 1)
        if progress:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
            )
            self._progress.start()
            self._task_id = self._progress.add_task("train", total=total_steps, completed=start_step, loss="-", tps="-",
                                                  detail="")

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

    def advance(self, step: int, loss: float, tokens_per_s: float, detail: str = "") -> None:
        """Move the bar; `detail` is a short per-task line (train/validation loss and weight of each task)."""
        if self.active and self._progress is not None:
            self._progress.update(
                self._task_id, completed=step, loss=f"{loss:.4f}", tps=f"{tokens_per_s:,.0f}", detail=detail
            )

    def close(self) -> None:
        if not self.active:
            return
        if self._progress is not None:
            self._progress.stop()
        if self._writer is not None:
            self._writer.close()
        self._file.close()
        self.active = False  # closing twice is harmless


def _json_safe(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
