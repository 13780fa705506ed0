"""Hostile programs against the sandbox: none may escape, pass, or leave a process behind.

Most run twice: with the audit-hook guard (the default) and without it, to show the OS layers alone (own uid,
rlimits, process group and subreaper kill, network namespace) still hold where they apply.
"""

from __future__ import annotations

import os
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mft_eval.sandbox import Job, Sandbox, SandboxConfig

CHECK_RETURNS_1 = "def check(candidate):\n    assert candidate() == 1\n"
IS_ROOT = os.geteuid() == 0


def marker_processes() -> list[int]:
    """Live processes started by a sandbox of this test process (found through the server's env marker)."""
    marker = f"MFT_EVAL_SANDBOX_OF={os.getpid()}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in env.split(b"\0") and state != b"Z":
            found.append(int(name))
    return found


def run(program: str, guard: bool = True, timeout: float = 1.0, test: str = CHECK_RETURNS_1, **limits):
    config = SandboxConfig(timeout=timeout, workers=1, guard=guard, **limits)
    with Sandbox(config) as sandbox:
        result = sandbox.run(Job(textwrap.dedent(program), test, "f"))
    deadline = time.monotonic() + 2
    while marker_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker_processes() == [], "a sandboxed process outlived the run"
    return result


def test_correct_and_wrong_programs():
    assert run("def f():\n    return 1\n").status == "passed"
    wrong = run("def f():\n    return 2\n")
    assert wrong.status == "failed" and "AssertionError" in wrong.detail


def test_syntax_error_and_missing_entry_point_fail():
    assert run("def f(:\n").status == "failed"
    missing = run("def g():\n    return 1\n")
    assert missing.status == "failed" and "entry point" in missing.detail


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize(
    "program",
    [
        "import os\ndef f():\n    os._exit(0)\n",
        "import sys\ndef f():\n    sys.exit(0)\n",
        "import os\nos._exit(0)\ndef f():\n    return 1\n",
        "raise SystemExit(0)\n",
    ],
    ids=["os._exit-in-call", "sys.exit-in-call", "os._exit-at-import", "SystemExit-at-import"],
)
def test_exiting_early_is_not_a_pass(program, guard):
    result = run(program, guard=guard)
    assert result.status == "failed"


def test_forged_verdict_on_fd3_is_not_a_pass():
    program = """
    import os
    def f():
        for fd in range(3, 10):
            try:
                os.write(fd, b"passed\\tpassed\\t\\n")
            except OSError:
                pass
        os._exit(0)
    """
    assert run(program, guard=False).status == "failed"


def test_token_is_not_reachable_by_introspection():
    program = """
    import gc, sys
    def f():
        try:
            gc.get_objects()
        except PermissionError:
            pass
        else:
            return 1
        try:
            sys._getframe(1)
        except (PermissionError, ValueError):
            pass
        else:
            return 1
        try:
            raise ValueError
        except ValueError as e:
            try:
                e.__traceback__.tb_frame
            except PermissionError:
                return 2
        return 1
    """
    assert run(program).status == "failed"


@pytest.mark.parametrize("guard", [True, False])
def test_always_equal_object_fails(guard):
    program = """
    class Anything:
        def __eq__(self, other):
            return True
    def f():
        return Anything()
    """
    result = run(program, guard=guard)
    assert result.status == "failed" and "non-builtin" in result.detail
    metaclass = """
    class Meta(type):
        def __eq__(cls, other):
            return True
        def __hash__(cls):
            return hash(int)
    class Fake(metaclass=Meta):
        def __eq__(self, other):
            return True
    def f():
        return Fake()
    """
    assert run(metaclass, guard=guard).status == "failed"
    subclass = "class S(int):\n    def __eq__(self, o):\n        return True\ndef f():\n    return [S(5)]\n"
    assert run(subclass, guard=guard, test="def check(c):\n    assert c() == [1]\n").status == "failed"


def test_rebinding_builtins_or_the_test_globals_does_not_help():
    program = """
    import builtins
    def f():
        builtins.abs = lambda x: 0
        builtins.len = lambda x: 3
        globals()["expected"] = 99
        return 99
    """
    test = (
        "expected = 1\n"
        "def check(candidate):\n"
        "    candidate()\n"
        "    assert abs(candidate() - expected) < 1e-6\n"
        "    assert len([1, 2, 3]) == 3\n"
    )
    assert run(program, test=test).status == "failed"
    assert run("def f():\n    return 1\n", test=test).status == "passed"


@pytest.mark.parametrize(
    "how",
    [
        "open({p!r}, 'w').write('x')",
        "import io; io.open({p!r}, 'w').write('x')",
        "import os; os.close(os.open({p!r}, os.O_WRONLY | os.O_CREAT))",
        "import pathlib; pathlib.Path({p!r}).write_text('x')",
    ],
    ids=["open", "io.open", "os.open", "pathlib"],
)
@pytest.mark.parametrize("guard", [True, False])
def test_writes_outside_temp_dir_do_not_escape(how, guard, tmp_path):
    if not guard and not IS_ROOT:
        pytest.skip("without the guard, only the server's own-uid drop (root only) blocks these writes")
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o755)
    program = f"def f():\n    {how.format(p=str(target))}\n    return 1\n"
    result = run(program, guard=guard)
    assert result.status == "failed"
    assert not target.exists()


def test_everyday_library_code_runs_under_the_guard():
    # namedtuple, TypeVar, NamedTuple and functional Enum ask for the caller's frame; numpy imports ctypes
    # optionally; logging looks up its caller: all must keep working under the audit hook
    program = """
    from collections import namedtuple
    from typing import NamedTuple, TypeVar
    import enum, logging, dataclasses, socket
    import numpy as np
    P = namedtuple("P", "x y")
    T = TypeVar("T")
    class Q(NamedTuple):
        a: int
    E = enum.Enum("E", "A B")
    @dataclasses.dataclass
    class D:
        x: int = 1
    logging.getLogger("t").warning("logged")
    def f():
        return P(1, 2).x + Q(0).a + D().x - 1 + int(np.zeros(1)[0])
    """
    result = run(program, timeout=10.0)
    assert result.status == "passed", result.detail


def test_writes_inside_temp_dir_are_allowed():
    program = """
    import os
    def f():
        with open("scratch.txt", "w") as fh:
            fh.write("ok")
        os.mkdir("sub")
        return 1 if open("scratch.txt").read() == "ok" else 0
    """
    assert run(program).status == "passed"


@pytest.mark.parametrize(
    "how",
    [
        "import os; os.system('touch {p}')",
        "import posix; posix.system('touch {p}')",
        "import subprocess; subprocess.run(['touch', '{p}'])",
        "import os; os.execv('/bin/touch', ['touch', '{p}'])",
        "import ctypes; ctypes.CDLL(None).system(b'touch {p}')",
        "import os; os.popen('touch {p}').read()",
    ],
    ids=["os.system", "posix.system", "subprocess", "execv", "ctypes", "popen"],
)
def test_shell_commands_are_blocked(how, tmp_path):
    target = tmp_path / "shell-ran"
    program = f"def f():\n    {how.format(p=target)}\n    return 1\n"
    result = run(program)
    time.sleep(0.05)
    assert result.status == "failed"
    assert not target.exists()


@pytest.mark.parametrize("guard", [True, False])
def test_sockets_cannot_reach_the_host(guard):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    program = f"""
    import socket
    def f():
        s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        s.sendall(b"hello")
        return 1
    """
    with Sandbox(SandboxConfig(timeout=2, workers=1, guard=guard)) as sandbox:
        network = sandbox.network_isolation
        result = sandbox.run(Job(textwrap.dedent(program), CHECK_RETURNS_1, "f"))
    if not guard and network != "network-namespace":
        server.close()
        thread.join()
        pytest.skip("no network namespace here: sockets are only disabled by the guard")
    server.close()
    thread.join()
    assert result.status in ("failed", "timeout")
    assert accepted == []


def test_network_isolation_is_reported():
    with Sandbox(SandboxConfig(workers=1)) as sandbox:
        assert sandbox.network_isolation in ("network-namespace", "sockets-disabled")


def test_without_a_namespace_sockets_are_disabled_by_the_guard():
    program = "import socket\ndef f():\n    socket.socket()\n    return 1\n"
    with Sandbox(SandboxConfig(workers=1, timeout=1, netns=False)) as sandbox:
        assert sandbox.network_isolation == "sockets-disabled"
        result = sandbox.run(Job(program, CHECK_RETURNS_1, "f"))
    assert result.status == "failed" and "socket" in result.detail


@pytest.mark.parametrize("guard", [True, False])
def test_fork_bomb_is_contained(guard):
    if not guard and not IS_ROOT:
        pytest.skip("RLIMIT_NPROC is per uid: without root the bomb would count the user's own processes")
    program = """
    import os
    def f():
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    result = run(program, guard=guard, timeout=1.0)
    assert result.status in ("failed", "timeout")


@pytest.mark.parametrize("guard", [True, False])
def test_memory_bomb_is_contained(guard):
    program = """
    def f():
        blocks = []
        while True:
            blocks.append(bytearray(50 * 1024 * 1024))
    """
    result = run(program, guard=guard, timeout=5.0, memory_mb=512)
    assert result.status == "failed" and "MemoryError" in result.detail


@pytest.mark.parametrize(
    "program",
    [
        "def f():\n    while True:\n        pass\n",
        "import time\ndef f():\n    time.sleep(10)\n    return 1\n",
        "import re\ndef f():\n    re.match(r'(a+)+$', 'a' * 64 + 'b')\n    return 1\n",
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ndef f():\n    while True:\n        pass\n",
    ],
    ids=["busy-loop", "sleep", "regex-loop-in-C", "ignores-SIGTERM"],
)
def test_programs_that_never_end_time_out(program):
    start = time.monotonic()
    result = run(program, guard=False, timeout=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - start < 5


def test_output_flood_is_capped_and_killed():
    program = "def f():\n    while True:\n        print('x' * 10000)\n"
    result = run(program, guard=False, timeout=5.0, output_cap=64 * 1024)
    assert result.status == "failed" and "output limit" in result.detail
    assert len(result.output) <= 64 * 1024


def test_stdin_is_closed():
    result = run("def f():\n    return int(input())\n")
    assert result.status == "failed" and "EOFError" in result.detail


@pytest.mark.parametrize("guard", [True, False])
def test_grandchildren_do_not_outlive_the_run(guard):
    # a daemonised grandchild in its own session: only the subreaper sweep can find it
    program = """
    import os, time
    def f():
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        time.sleep(0.2)
        return 1
    """
    result = run(program, guard=guard, timeout=2.0)  # run() asserts that no marked process survives
    assert result.status in ("passed", "failed")


def test_killing_the_parent_does_not_pass_and_the_pool_recovers():
    program = "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n"
    with Sandbox(SandboxConfig(timeout=1, workers=1, guard=False)) as sandbox:
        first = sandbox.run(Job(program, CHECK_RETURNS_1, "f"))
        second = sandbox.run(Job("def f():\n    return 1\n", CHECK_RETURNS_1, "f"))
    assert first.status in ("failed", "error")
    assert second.status == "passed"
    assert marker_processes() == []


def test_file_size_limit():
    program = "def f():\n    open('big', 'wb').write(b'x' * (4 * 1024 * 1024))\n    return 1\n"
    result = run(program, guard=False, max_file_mb=1)
    assert result.status in ("failed", "error")


def test_temp_dir_is_fresh_and_removed():
    program = """
    import os
    def f():
        assert os.listdir('.') == []
        open('mine', 'w').write(os.getcwd())
        print(os.getcwd())
        return 1
    """
    result = run(program)
    assert result.status == "passed"
    cwd = result.output.strip()
    assert cwd and not Path(cwd).exists()


def test_many_programs_in_parallel_keep_their_order():
    jobs = [Job(f"def f():\n    return {i % 2}\n", CHECK_RETURNS_1, "f") for i in range(20)]
    with Sandbox(SandboxConfig(timeout=2, workers=2)) as sandbox:
        results = sandbox.run_many(jobs)
    assert [r.status for r in results] == ["failed" if i % 2 == 0 else "passed" for i in range(20)]
