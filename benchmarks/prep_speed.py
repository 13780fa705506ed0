"""Benchmark mft-prep against a bare `pyarrow.json.read_json` of the same file, and its peak memory.

Generates Evol-instruction-like records (instruction/output pairs: a lognormal number of words, one fenced code
block, prose around it; about 4% exact duplicates with changed case/spacing and 3% near duplicates), then, for
each size, times in separate processes, interleaved: the bare read (baseline), `mft-prep` without near-dup and
with near-dup (the defaults otherwise: Evol filters, exact dedup, HumanEval decontamination, split, shards).
Prints ratios against the baseline of the same size measured in the same run, just before (the machine is shared, so
absolute seconds mean little), in wall-clock seconds and in CPU seconds (all threads, mft-prep's worker processes
included), and every process's peak RSS (the largest worker's separately).

    .venv/bin/python benchmarks/prep_speed.py                      # 100k records, plus 50k for the memory check
    .venv/bin/python benchmarks/prep_speed.py --sizes 20000 --repeats 1
    .venv/bin/python benchmarks/prep_speed.py --breakdown 20000    # CPU seconds as each stage is switched on
    .venv/bin/python benchmarks/prep_speed.py --sizes 20000 --workers auto,0   # with and without worker processes
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    mode, src, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    t0 = time.perf_counter()
    if mode == "baseline":
        import pyarrow.json as pj
        rows = pj.read_json(src).num_rows
    else:
        from mft_dataprep.api import PrepConfig, run_with_result
        config = PrepConfig.from_dict({
            "tasks": [{"name": "evol", "sources": [src]}],
            "dedup": {"near": mode == "prep-near"},
        }, base_dir=".")
        result = run_with_result(config, out, progress=False, workers=None if workers == "auto" else int(workers))
        rows = result.manifest["totals"]["kept"]
        totals = result.manifest["totals"]
    seconds = time.perf_counter() - t0
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"mode": mode, "seconds": seconds, "rows": rows,
                      "cpu": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
                      "peak_mib": own.ru_maxrss / 1024, "worker_peak_mib": kids.ru_maxrss / 1024,
                      "totals": totals if mode != "baseline" else None}))
    """
)

_WORDS = [
    "value", "list", "return", "function", "string", "number", "input", "output", "data", "result", "index",
    "element", "array", "the", "a", "of", "to", "and", "in", "is", "that", "for", "it", "with", "as", "this", "we",
    "each", "then", "loop", "check", "call", "time", "memory", "case", "edge", "sorted", "key", "dictionary",
]


def _word(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(_WORDS)
    return "w" + str(int(rng.paretovariate(1.1) * 10) % 30000)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(_word(rng) for _ in range(n))


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, int(rng.lognormvariate(0, sigma) * median)))


def make_record(rng: random.Random, i: int) -> dict:
    """An Evol-like record; lengths follow Evol-instruction-66k's rough shape (long tail, median ~250 words)."""
    instruction = f"Task {i}: " + _words(rng, _lognormal(rng, 40, 0.8, 4, 1200))
    code_lines = _lognormal(rng, 18, 0.7, 1, 160)
    code = "\n".join(f"    v{i}_{k} = {_word(rng)}_{k}({_word(rng)}, {k})" for k in range(code_lines))
    before = _words(rng, _lognormal(rng, 40, 0.9, 0, 400))
    after = _words(rng, _lognormal(rng, 120, 0.8, 5, 1500))
    output = f"{before}\n\n```python\ndef solve_{i}(x):\n{code}\n    return x\n```\n\n{after}"
    return {"instruction": instruction, "output": output}


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    recent: list[dict] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            r = rng.random()
            if recent and r < 0.04:  # exact duplicate, with case and spacing changed
                src = rng.choice(recent)
                rec = {"instruction": src["instruction"].upper().replace(" ", "  "), "output": src["output"]}
            elif recent and r < 0.07:  # near duplicate: one word of the answer changed
                src = rng.choice(recent)
                words = src["output"].split(" ")
                words[rng.randrange(len(words))] = "changed"
                rec = {"instruction": src["instruction"], "output": " ".join(words)}
            else:
                rec = make_record(rng, i)
                recent = (recent + [rec])[-1000:]
            f.write(json.dumps(rec) + "\n")


def run_child(mode: str, src: Path, out: Path, workers: str = "auto") -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(src), str(out), workers], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_STAGES = [
    ("parse + validate + split + write", {"quality": {"enabled": False}, "dedup": {"exact": False, "near": False},
                                          "tasks": [{"name": "evol", "sources": [], "decontaminate": False}]}),
    ("+ Evol quality rules", {"dedup": {"exact": False, "near": False},
                              "tasks": [{"name": "evol", "sources": [], "decontaminate": False}]}),
    ("+ exact dedup", {"dedup": {"near": False}, "tasks": [{"name": "evol", "sources": [], "decontaminate": False}]}),
    ("+ HumanEval decontamination", {"dedup": {"near": False}}),
    ("+ near dedup (all defaults)", {}),
]


def breakdown(n: int, tmpdir: Path) -> None:
    """CPU seconds (this process) of one run per cumulative stage set, against pyarrow's read_json CPU seconds."""
    import time

    import pyarrow.json as pj
    from mft_dataprep.api import PrepConfig, run_with_result

    src = tmpdir / f"evol-{n}.jsonl"
    generate(src, n)
    t = time.process_time()
    pj.read_json(src)
    base = time.process_time() - t
    print(f"{n:,} records: pyarrow.json.read_json {base:.2f} CPU s (all threads)")
    previous = 0.0
    for i, (name, overrides) in enumerate(_STAGES):
        data = {"tasks": [{"name": "evol", "sources": [str(src)]}], **overrides}
        data["tasks"] = [{**task, "sources": [str(src)]} for task in data["tasks"]]
        config = PrepConfig.from_dict(data, base_dir=tmpdir)
        t = time.process_time()
        run_with_result(config, tmpdir / f"stage-{i}", progress=False, workers=0)  # all work in this process
        cpu = time.process_time() - t
        print(f"  {name:34s} {cpu:6.2f} CPU s  (+{cpu - previous:5.2f})  {cpu / base:5.1f}x read_json", flush=True)
        previous = cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50000,100000", help="comma-separated record counts")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions per size")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put inputs and outputs (default: a temp dir)")
    parser.add_argument("--breakdown", type=int, default=0, help="only time the stages on this many records")
    parser.add_argument("--workers", default="auto",
                        help="comma-separated worker settings to time mft-prep with: auto (the default: one per CPU"
                             " for big inputs) or a number, 0 for everything in one process")
    args = parser.parse_args()
    if args.breakdown:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            breakdown(args.breakdown, Path(tmp))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = args.workers.split(",")
    modes = [(m, w) for w in settings for m in ("prep", "prep-near")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmpdir = Path(tmp)
        results: dict[int, dict[tuple[str, str], list[dict]]] = {}
        for n in sizes:
            src = tmpdir / f"evol-{n}.jsonl"
            generate(src, n)
            mib = src.stat().st_size / 2**20
            print(f"\n{n:,} records, {mib:.0f} MiB JSONL", flush=True)
            runs: dict[tuple[str, str], list[dict]] = {("baseline", "-"): [], **{key: [] for key in modes}}
            for rep in range(args.repeats):
                for mode, workers in modes:  # a baseline before each mft-prep run: both see the same machine load
                    for key in (("baseline", "-"), (mode, workers)):
                        out = tmpdir / f"out-{n}-{key[0]}-{key[1]}-{rep}"
                        r = run_child(key[0], src, out, key[1] if key[1] != "-" else "auto")
                        runs[key].append(r)
                        print(f"  {key[0]:10s} workers {key[1]:4s} {r['seconds']:7.2f} s  cpu {r['cpu']:7.2f} s"
                              f"  peak {r['peak_mib']:6.0f} MiB (workers {r['worker_peak_mib']:4.0f})"
                              + (f"  totals {r['totals']}" if r["totals"] else ""), flush=True)
            results[n] = runs
        print("\nsize      workers  prep/read  prep+near/read  (cpu: prep/read  prep+near/read)  peak MiB: read  prep"
              "  prep+near  (largest worker)")
        for n, runs in results.items():
            base = min(r["seconds"] for r in runs[("baseline", "-")])
            base_cpu = min(r["cpu"] for r in runs[("baseline", "-")])
            peak_base = max(r["peak_mib"] for r in runs[("baseline", "-")])
            for w in settings:
                prep, near = runs[("prep", w)], runs[("prep-near", w)]
                t_prep, t_near = min(r["seconds"] for r in prep), min(r["seconds"] for r in near)
                c_prep, c_near = min(r["cpu"] for r in prep), min(r["cpu"] for r in near)
                p_prep, p_near = max(r["peak_mib"] for r in prep), max(r["peak_mib"] for r in near)
                p_work = max(r["worker_peak_mib"] for r in prep + near)
                print(f"{n:<9,} {w:7s} {t_prep / base:9.1f}x {t_near / base:14.1f}x  {c_prep / base_cpu:11.1f}x"
                      f" {c_near / base_cpu:15.1f}x  {peak_base:15.0f} {p_prep:5.0f} {p_near:10.0f}  {p_work:8.0f}")
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            for key in [("baseline", "-"), *modes]:
                a = max(r["peak_mib"] for r in results[lo][key])
                b = max(r["peak_mib"] for r in results[hi][key])
                print(f"peak memory {key[0]:10s} workers {key[1]:4s}: {a:.0f} MiB at {lo:,} -> {b:.0f} MiB at {hi:,}"
                      f" ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
