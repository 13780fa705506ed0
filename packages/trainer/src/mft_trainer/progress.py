"""Training progress on stdout: a live rich bar on a terminal, plain log lines everywhere else (rank 0 only).

On a terminal (and unless `--no-progress`), one bar whose first line keeps the step counter, loss, tokens/s and ETA
within 80 columns, with the per-task detail on its own line below it:

    train ━━━━━━━━━━━━━━━━━━━━ 12/40 loss 4.1234 3,456 tok/s 0:00:12 ETA 0:00:30
    alpaca 4.314 w0.14 | code-exercise 4.241 w0.14 | ...

When stdout is a file or a pipe (a cluster job, `mft run`'s stage logs), or with `--no-progress`, one line every
`logging.log_every` optimizer steps and at the last step, each complete on its own:

    step 12/40 | loss 4.1234 | lr 2.95e-03 | 3,456 tok/s | elapsed 0:00:12 | eta 0:00:30 | alpaca 4.314 w0.14 | ...
    valid step 20/40 | alpaca 4.817 | code-exercise 6.217 | ...
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

PIPE_WIDTH = 10_000  # columns of a console writing to a file or pipe: tables keep whole names and paths


def stdout_console() -> Console:
    """The console for what training prints: as wide as the terminal, or PIPE_WIDTH columns on a file or pipe."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def hms(seconds: float) -> str:
    """`H:MM:SS` (what rich's time columns show)."""
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _BarWithDetail(Progress):
    """A rich Progress that renders one more line, the per-task detail, under its bar."""

    detail: str = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self.detail:
            yield Text(self.detail, overflow="fold")


def plain_step_line(step: int, total: int, *, loss: float, lr: float, tokens_per_s: float, elapsed: float,
                    eta: float | None, tasks: str) -> str:
    """One plain log line for an optimizer step (what a non-terminal stdout gets every log_every steps)."""
    parts = [f"step {step}/{total}", f"loss {loss:.4f}", f"lr {lr:.2e}", f"{tokens_per_s:,.0f} tok/s",
             f"elapsed {hms(elapsed)}", f"eta {'-' if eta is None else hms(eta)}"]
    if tasks:
        parts.append(tasks)
    return " | ".join(parts)


class TrainProgress:
    """What the loop reports each optimizer step; inactive (prints nothing) on ranks other than 0.

    live: a rich bar (only when the console is a terminal); otherwise plain lines every `log_every` steps.
    """

    def __init__(self, *, total: int, start_step: int, log_every: int, live: bool, active: bool,
                 console: Console | None = None) -> None:
        self.active = active
        self.total = total
        self.start_step = start_step
        self.log_every = log_every
        self.console = console or stdout_console()
        self.live = bool(live and active and self.console.is_terminal)
        self._started = time.perf_counter()
        self._bar: _BarWithDetail | None = None
        self._task_id: Any = None
        if self.live:
            self._bar = _BarWithDetail(
                TextColumn("[bold]train"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.start()
            self._task_id = self._bar.add_task("train", total=total, completed=start_step, loss="-", tps="-")

    def note(self, text: str) -> None:
        """A line of its own (above the live bar, or in the log)."""
        if self.active:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def eta(self, step: int) -> float | None:
        """Seconds left at this run's mean step time so far (None before the first step of this run)."""
        done_here = step - self.start_step
        if done_here <= 0:
            return None
        return (time.perf_counter() - self._started) / done_here * (self.total - step)

    def update(self, step: int, *, loss: float, lr: float, tokens_per_s: float, tasks: str = "",
               valid: str = "", force: bool = False) -> None:
        """After optimizer step `step` (1-based). `tasks`: per-task train detail; `valid`: this step's validation
        detail (empty when it did not validate). force: print a plain line even off the log_every grid."""
        if not self.active:
            return
        if self._bar is not None:
            self._bar.detail = tasks + (f" || valid {valid}" if valid else "")
            self._bar.update(self._task_id, completed=step, loss=f"{loss:.4f}", tps=f"{tokens_per_s:,.0f}")
            return
        if force or step % self.log_every == 0 or step == self.total:
            self.note(plain_step_line(step, self.total, loss=loss, lr=lr, tokens_per_s=tokens_per_s,
                                      elapsed=time.perf_counter() - self._started, eta=self.eta(step), tasks=tasks))
        if valid:
            self.note(f"valid step {step}/{self.total} | {valid}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
