"""progress.py: on a terminal of 80 columns the bar keeps step counter, loss and ETA on its first line and puts the
per-task detail on its own; a file or pipe (or --no-progress) gets one plain line every log_every steps and at the
last, with step/total, loss, lr, tokens/s, elapsed, ETA and per-task losses; ranks other than 0 print nothing."""

from __future__ import annotations

import io
import re

from mft_trainer.progress import TrainProgress, hms, plain_step_line
from rich.console import Console

DETAIL = " | ".join(f"{name} 4.314 w0.14" for name in ("alpaca", "code-exercise", "evol-instruct", "git-chat",
                                                          "python-qa", "python-source", "sql"))
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal(width: int = 80) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=width, color_system=None), buffer


def _pipe() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=10_000), buffer


def test_live_bar_at_80_columns_keeps_counter_loss_and_eta() -> None:
    console, buffer = _terminal(80)
    bar = TrainProgress(total=40, start_step=0, log_every=1, live=True, active=True, console=console)
    assert bar.live
    for step in range(1, 13):
        bar.update(step, loss=4.1234, lr=3e-3, tokens_per_s=3456.0, tasks=DETAIL, valid="")
    bar.close()
    frames = _ANSI.sub("", buffer.getvalue()).replace("\r", "\n")
    lines = [line for line in frames.splitlines() if line.strip()]
    first = next(line for line in reversed(lines) if line.startswith("train"))
    assert len(first) <= 80
    for needle in ("12/40", "loss 4.1234", "3,456 tok/s", "ETA"):
        assert needle in first, (needle, first)
    assert "alpaca 4.314 w0.14" not in first  # the per-task detail has its own line(s)
    assert any(line.startswith("alpaca 4.314 w0.14 | code-exercise") for line in lines)


def test_plain_lines_every_log_every_steps_and_at_the_end() -> None:
    for live, make in ((True, _pipe), (False, _terminal)):  # a pipe; or a terminal with --no-progress
        console, buffer = make()
        bar = TrainProgress(total=5, start_step=0, log_every=2, live=live, active=True, console=console)
        assert not bar.live
        for step in range(1, 6):
            bar.update(step, loss=5.0 - step / 10, lr=1e-3, tokens_per_s=1234.0, tasks="a 4.100 w0.50 | b 4.200 w0.50",
                       valid="a 4.500 | b 4.600" if step == 4 else "")
        bar.close()
        lines = _ANSI.sub("", buffer.getvalue()).splitlines()
        assert [line.split(" | ")[0] for line in lines] == ["step 2/5", "step 4/5", "valid step 4/5", "step 5/5"]
        assert lines[1].startswith("step 4/5 | loss 4.6000 | lr 1.00e-03 | 1,234 tok/s | elapsed 0:00:00 | eta ")
        assert lines[1].endswith("| a 4.100 w0.50 | b 4.200 w0.50") and lines[2] == "valid step 4/5 | a 4.500 | b 4.600"


def test_resumed_eta_and_inactive_ranks() -> None:
    console, buffer = _pipe()
    bar = TrainProgress(total=10, start_step=6, log_every=1, live=False, active=True, console=console)
    assert bar.eta(6) is None  # no step of this run yet
    assert bar.eta(8) is not None and bar.eta(8) >= 0
    silent = TrainProgress(total=10, start_step=0, log_every=1, live=True, active=False, console=console)
    silent.update(1, loss=1.0, lr=1e-3, tokens_per_s=1.0, tasks="x")
    silent.note("nothing")
    assert buffer.getvalue() == ""


def test_plain_step_line_and_hms() -> None:
    assert hms(3725.4) == "1:02:05" and hms(-1) == "0:00:00"
    line = plain_step_line(3, 40, loss=2.5, lr=2e-4, tokens_per_s=12345.6, elapsed=61, eta=None, tasks="")
    assert line == "step 3/40 | loss 2.5000 | lr 2.00e-04 | 12,346 tok/s | elapsed 0:01:01 | eta -"
