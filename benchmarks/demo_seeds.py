"""The demo over several seeds: run it, and derive benchmarks/expected.json's demo numbers from the spread.

    python benchmarks/demo_seeds.py run --seeds 0 1 2            # sequential, work/demo-seeds/seed-N, own caches
    python benchmarks/demo_seeds.py derive work/demo-seeds/seed-*/pipeline_summary.json [--write-expected]

`derive` reads each run's pipeline_summary.json (its `seed` says which seed it was), writes
benchmarks/demo_seeds.json (per-seed numbers, mean, standard deviation, the tolerance, the machine) and, with
--write-expected, sets every `demo.*` entry of expected.json from them: a pass@1 to the mean over seeds with the
tolerance of `reproduce.spread_tolerance` (the 95% prediction interval for one more run, at least one problem's
worth); a validation loss to the geometric mean with the log-scale tolerance of `reproduce.pooled_log_tolerance`
(relative spread pooled over the tasks' losses, the same prediction interval).
Measure at the thread count `make demo` and CI use (torch's default, here 2): the count changes the rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from reproduce import EXPECTED, pooled_log_tolerance, spread_tolerance  # noqa: E402

SEEDS_FILE = ROOT / "benchmarks" / "demo_seeds.json"
# The smallest change a metric can show: one problem of the smallest held-out set it is scored on (50 problems
# for translation and unit tests, 50 for the hard split, 100 for text-to-code; HumanEval 164), or 1% of a loss
# (0.01 on the log scale).
RESOLUTION = {"pass@1": 0.02, "valid_loss": 0.01}


def machine() -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line)
        info["avx512_bf16"] = "avx512_bf16" in cpuinfo
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    return info


def run(seeds: list[int], root: Path) -> None:
    for seed in seeds:
        out = root / f"seed-{seed}"
        env = dict(os.environ, MFT_CACHE_DIR=str(out / "cache"))
        start = time.time()
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "mft"), "run", str(ROOT / "pipelines" / "demo-cpu.yaml"),
             "--seed", str(seed), "--workdir", str(out)], check=True, env=env,
        )
        print(f"seed {seed}: {time.time() - start:.0f} s wall")


def derive(
    summaries: list[Path], write_expected: bool, expected_path: Path = EXPECTED, seeds_file: Path = SEEDS_FILE
) -> dict[str, Any]:
    runs = {}
    for path in summaries:
        summary = json.loads(path.read_text(encoding="utf-8"))
        if summary.get("seed") is None:
            raise SystemExit(f"{path}: no seed recorded (run it with `mft run --seed N`)")
        runs[summary["seed"]] = summary
    seeds = sorted(runs)
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    numbers = {}
    host = machine()
    entries = [e for e in expected["numbers"] if e["id"].startswith("demo.")]
    values = {}
    for entry in entries:
        _, task, metric = entry["id"].split(".", 2)
        values[entry["id"]] = [float(runs[s]["metrics"][task][metric]) for s in seeds]
    losses = pooled_log_tolerance({k: v for k, v in values.items() if k.endswith(".valid_loss")},
                                  RESOLUTION["valid_loss"])
    for entry in entries:
        number = values[entry["id"]]
        on_log_scale = entry["id"] in losses
        if on_log_scale:
            mean, tolerance = losses[entry["id"]]
            rule = (f"value = the geometric mean over seeds, tolerance on the log scale (|ln x - ln value| <= "
                    f"tolerance) = the 95% prediction interval for one more run with the relative spread pooled over "
                    f"the tasks' validation losses, at least {RESOLUTION['valid_loss']}")
        else:
            mean, tolerance = spread_tolerance(number, RESOLUTION["pass@1"])
            rule = (f"value = the mean over seeds, tolerance = the 95% prediction interval for one more run, "
                    f"t(0.975, n-1)·s·sqrt(1+1/n), at least {RESOLUTION['pass@1']}")
        numbers[entry["id"]] = {"per_seed": dict(zip(map(str, seeds), number, strict=True)), "mean": mean,
                                "sd": round(statistics.stdev(number), 4), "tolerance": tolerance,
                                **({"scale": "log"} if on_log_scale else {})}
        if write_expected:
            entry["value"], entry["tolerance"] = mean, tolerance
            entry.pop("scale", None)
            if on_log_scale:
                entry["scale"] = "log"
            entry["seeds"] = numbers[entry["id"]]["per_seed"]
            entry["source"] = (
                f"pipelines/demo-cpu.yaml, seeds {', '.join(map(str, seeds))} (mft run --seed N), measured "
                f"{runs[seeds[-1]]['finished'][:10]} on {host['cpu']} at {host['threads']} threads: {rule} "
                f"(benchmarks/demo_seeds.py)"
            )
    train_seconds = {str(s): round(sum(st["duration_s"] for st in runs[s]["stages"] if st["tool"] == "train"), 1)
                     for s in seeds}
    wall_seconds = {str(s): round(sum(st["duration_s"] for st in runs[s]["stages"]), 1) for s in seeds}
    result = {"seeds": seeds, "machine": host, "finished": {str(s): runs[s]["finished"] for s in seeds},
              "train_seconds": train_seconds, "stage_seconds": wall_seconds, "numbers": numbers}
    seeds_file.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if write_expected:
        expected_path.write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run")
    run_p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run_p.add_argument("--root", type=Path, default=ROOT / "work" / "demo-seeds")
    derive_p = sub.add_parser("derive")
    derive_p.add_argument("summaries", type=Path, nargs="+")
    derive_p.add_argument("--write-expected", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.seeds, args.root)
    else:
        result = derive(args.summaries, args.write_expected)
        for key, value in result["numbers"].items():
            print(f"{key:40s} {value['per_seed']}  mean {value['mean']:.4f}  sd {value['sd']:.4f}  "
                  f"tolerance {value['tolerance']:.4f}{' (log scale)' if value.get('scale') == 'log' else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
