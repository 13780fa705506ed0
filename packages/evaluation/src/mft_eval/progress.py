"""Progress of generation and scoring on stderr: a rich bar on a terminal; plain lines otherwise (a file or pipe,
as in a cluster job or an `mft run` stage log): done/total, rate and ETA, at most every `PLAIN_EVERY_S` seconds and
once at the end, e.g. ``mft-eval: generating 48/164 samples (29%), 1.9/s, ETA 61s``."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import Progress

PLAIN_EVERY_S = 15.0


class Activity:
    """`with Activity("generating", total, "samples") as p: p.advance(n)`."""

    def __init__(self, what: str, total: int, unit: str, console: Console | None = None) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self._console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._bar = Progress(console=self._console, transient=True) if self._console.is_terminal else None
        self._task = None
        self._started = self._last_line = time.monotonic()

    def __enter__(self) -> Activity:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)
            return
        now = time.monotonic()
        if self.done >= self.total or now - self._last_line >= PLAIN_EVERY_S:
            self._last_line = now
            self._console.print(f"mft-eval: {self.line(now - self._started)}", markup=False)

    def line(self, seconds: float) -> str:
        """The plain progress line after `seconds`."""
        rate = self.done / seconds if seconds > 0 else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        head = f"{self.what} {self.done}/{self.total} {self.unit}{share}, {rate:.2f}/s"
        if self.done >= self.total:
            return f"{head}, done in {seconds:.1f}s"
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return f"{head}, ETA {eta:.0f}s"
