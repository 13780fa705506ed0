"""Progress of `mft-prep run` on stderr: a rich bar on a terminal (sources done out of total, records read, the
current file); plain lines otherwise (a file or pipe, as in a cluster job or an `mft run` stage log): one when a
task starts reading, one every `PLAIN_EVERY_S` seconds (sources done, records, rate), one when the shards are
written."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PLAIN_EVERY_S = 30.0


class PrepProgress:
    def __init__(self, enabled: bool, total_sources: int, console: Console | None = None) -> None:
        self.enabled = enabled
        self.records = 0
        self._console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._plain = enabled and not self._console.is_terminal
        self._progress = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("sources · {task.fields[records]:,} records · {task.fields[current]}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            if enabled and not self._plain
            else None
        )
        self._bar = None
        self._total = total_sources
        self._sources = 0
        self._started = self._last_line = time.monotonic()
        self._task = ""

    def __enter__(self) -> PrepProgress:
        if self._progress is not None:
            self._progress.start()
            self._bar = self._progress.add_task("reading", total=self._total, records=0, current="")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _line(self, text: str) -> None:
        self._console.print(f"mft-prep: {text}", markup=False)
        self._last_line = time.monotonic()

    def _rate(self) -> str:
        seconds = max(time.monotonic() - self._started, 1e-9)
        return f"{self.records:,} records in {seconds:.1f}s ({self.records / seconds:,.0f}/s)"

    def start_source(self, task: str, source: str) -> None:
        self._sources += 1
        if self._plain and (task != self._task or time.monotonic() - self._last_line >= PLAIN_EVERY_S):
            self._line(f"[{self._sources}/{self._total} sources] reading {task}: {source}; {self._rate()}")
        self._task = task
        if self._progress is not None and self._bar is not None:
            if self._progress.tasks[0].fields["current"]:
                self._progress.advance(self._bar, 1)
            self._progress.update(self._bar, current=f"{task}: {source}")

    def advance(self, n_records: int) -> None:
        self.records += n_records
        if self._plain and time.monotonic() - self._last_line >= PLAIN_EVERY_S:
            self._line(f"[{self._sources}/{self._total} sources] {self._rate()}")
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, records=self.records)

    def writing(self) -> None:
        if self._plain:
            self._line(f"[{self._total}/{self._total} sources] {self._rate()}; writing shards")
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, completed=self._total, description="writing shards", current="")
