"""Execute every sample's program against its problem's test in the sandbox and aggregate pass@k."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mft_eval.metrics import mean_pass_at_k
from mft_eval.problems import Benchmark
from mft_eval.samples import Sample
from mft_eval.sandbox import STATUSES, ExecResult, Job, Sandbox, SandboxConfig

# codefuse-evaluation's import header for Python programs (docs/reference.md §6), prepended with `--header codefuse`.
CODEFUSE_HEADER = (
    "import math\nimport re\nimport sys\nimport copy\nimport datetime\nimport itertools\nimport collections\n"
    "import heapq\nimport statistics\nimport functools\nimport hashlib\nimport numpy\nimport numpy as np\n"
    "import string\nfrom typing import *\nfrom collections import *\n"
)
HEADERS = {"none": "", "codefuse": CODEFUSE_HEADER}


@dataclass(frozen=True)
class SampleResult:
    task_id: str
    sample_index: int
    status: str
    detail: str
    seconds: float


def execute(
    bench: Benchmark,
    samples: Sequence[Sample],
    sandbox_config: SandboxConfig,
    header: str = "none",
    on_done: Callable[[int, ExecResult], None] | None = None,
) -> tuple[list[SampleResult], dict]:
    if header not in HEADERS:
        raise ValueError(f"unknown header {header!r}; expected one of {sorted(HEADERS)}")
    problems = bench.by_id()
    prefix = HEADERS[header]
    config = sandbox_config
    if header == "codefuse" and "numpy" not in config.preload:
        config = config.model_copy(update={"preload": [*config.preload, "numpy"]})
    # the judge runs the header and a code prompt before the test, as the reference harnesses run them before it
    # in the program's globals: the test's helpers (poly, encode_cyclic) and imports (math) are the prompt's
    jobs = [
        Job(prefix + s.program, problems[s.task_id].test, problems[s.task_id].entry_point,
            prelude=prefix + (problems[s.task_id].prompt if problems[s.task_id].prompt_is_code else ""))
        for s in samples
    ]
    with Sandbox(config) as sandbox:
        isolation = {"network_isolation": sandbox.network_isolation, "own_uid": sandbox.own_uid,
                     "isolation": sandbox.isolation}
        outcomes = sandbox.run_many(jobs, on_done)
    results = [
        SampleResult(s.task_id, s.sample_index, r.status, r.detail, r.seconds)
        for s, r in zip(samples, outcomes, strict=True)
    ]
    return results, isolation


def aggregate(bench: Benchmark, results: Sequence[SampleResult], ks: Sequence[int]) -> tuple:
    per_problem: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in results:
        per_problem[r.task_id][0] += 1
        per_problem[r.task_id][1] += r.status == "passed"
    # problems without any sample count as attempted with zero samples: pass@k is then skipped for every k
    ordered = {p.task_id: tuple(per_problem[p.task_id]) for p in bench.problems if p.task_id in per_problem}
    values, skipped = mean_pass_at_k(list(ordered.values()), ks)
    counts = Counter(r.status for r in results)
    return values, skipped, {s: counts.get(s, 0) for s in STATUSES}, ordered
