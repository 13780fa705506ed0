"""A rich progress display for `mft-prep run`: sources done out of total, records read, the current file."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class PrepProgress:
    def __init__(self, enabled: bool, total_sources: int, console: Console | None = None) -> None:
        self.enabled = enabled
        self.records = 0
        self._progress = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("sources · {task.fields[records]:,} records · {task.fields[current]}"),
                TimeElapsedColumn(),
                console=console or Console(stderr=True),
                transient=True,
            )
            if enabled
            else None
        )
        self._bar = None
        self._total = total_sources

    def __enter__(self) -> PrepProgress:
        if self._progress is not None:
            self._progress.start()
            self._bar = self._progress.add_task("reading", total=self._total, records=0, current="")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_source(self, task: str, source: str) -> None:
        if self._progress is not None and self._bar is not None:
            if self._progress.tasks[0].fields["current"]:
                self._progress.advance(self._bar, 1)
            self._progress.update(self._bar, current=f"{task}: {source}")

    def advance(self, n_records: int) -> None:
        self.records += n_records
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, records=self.records)

    def writing(self) -> None:
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, completed=self._total, description="writing shards", current="")
