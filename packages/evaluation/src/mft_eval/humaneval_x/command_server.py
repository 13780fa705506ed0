"""Inside the sandbox: build and run one HumanEval-X program per request, a fresh private directory each time.

Started by :mod:`mft_eval.humaneval_x.pool` (one per worker) under the same bubblewrap and setpriv as the Python
sandbox (``judge_server.bwrap_command``: fresh PID, network, IPC and UTS namespaces, read-only system, private
/tmp and /dev/shm, own uid, no capabilities), plus read-only views of the toolchains and of the prepared
dependencies. For each request::

    mkdtemp in the private /tmp · link in the prepared trees the program needs to add to (Go's build cache):
        writable directories of symlinks to the read-only files
    · write the source · for each step (compile, run):
        fork → setsid · chdir · stdin /dev/null · stdout+stderr → a pipe (first output_cap bytes kept)
             · rlimits AS/CPU/FSIZE/NPROC/CORE · execve(argv, env)
        wait until it exits or the program's deadline passes (compilation counts against the deadline)
    · stop at the first step that fails · SIGKILL every descendant (the server is a child subreaper)
    · empty /tmp and /dev/shm, remove System V IPC objects · answer with each step's exit, seconds and output

The answer is built here, in a process the program cannot ptrace (non-dumpable) or signal (the program runs in its
own session and the server re-checks every exit status it reaps). The test, as in every HumanEval-X harness, is
compiled into the program itself, so the verdict is the program's exit status (and, for JavaScript, its output).

Standard library only, plus ``sandbox_server.py``'s clean-up helpers (found one directory up).
"""

from __future__ import annotations

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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sandbox_server  # noqa: E402
import wire  # noqa: E402


def _child(step: dict, req: dict, workdir: str, out_fd: int, seconds_left: float) -> None:
    """Runs in the forked child; never returns."""
    try:
        os.setsid()
        os.chdir(workdir)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.closerange(3, 65536)
        mem = int(req["memory_mb"]) << 20
        cpu = max(1, int(seconds_left) + 1)
        fsize = int(req["max_file_mb"]) << 20
        nproc = int(req["max_processes"])
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        for sig in (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        env = {k: v.replace("{dir}", workdir) for k, v in step.get("env", {}).items()}
        env.setdefault("HOME", workdir)
        env.setdefault("TMPDIR", workdir)
        argv = [a.replace("{dir}", workdir) for a in step["argv"]]
        os.execve(argv[0], argv, env)
    except BaseException as exc:
        try:
            os.write(2, f"sandbox: cannot start {step['argv'][0]}: {exc}\n".encode())
        finally:
            os._exit(127)


def run_step(step: dict, req: dict, workdir: str, deadline: float, output_cap: int) -> dict:
    """One command until it exits or ``deadline`` (monotonic) passes."""
    started = time.monotonic()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        _child(step, req, workdir, out_w, deadline - started)
    os.close(out_w)
    pidfd = os.pidfd_open(pid)
    output = bytearray()
    printed = 0
    status = None
    watch = [pidfd, out_r]
    timed_out = False
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(watch, [], [], left)
        if out_r in ready:
            read = sandbox_server.read_output(out_r, output, output_cap)
            if not read:
                watch.remove(out_r)
            printed += read
        if pidfd in ready:
            status = os.waitpid(pid, 0)[1]
    if status is None:
        status = sandbox_server.kill_everything(pid).get(pid)
    else:
        # the program has exited; whatever it left behind (a background child holding the pipe) is killed now
        sandbox_server.kill_everything(None)
    while out_r in watch and len(output) < output_cap:
        if not select.select([out_r], [], [], 0)[0]:
            break
        read = sandbox_server.read_output(out_r, output, output_cap)
        if not read:
            break
        printed += read
    os.close(out_r)
    os.close(pidfd)
    code = None
    if status is not None and os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
    return {"name": step.get("name", ""), "exit": sandbox_server._exit_text(status), "code": code,
            "timed_out": timed_out, "seconds": round(time.monotonic() - started, 4),
            "output": output.decode("utf-8", "replace"), "printed": printed}


def link_farm(src: str, dst: str) -> None:
    """``dst``: the directories of ``src``, made writable, holding symlinks to its files. ``src`` is a read-only
    bind, so the program can add files (Go writes new cache entries) but cannot change the ones it links to, and
    nothing is copied (a real copy of Go's warmed cache took 0.1-0.16 s per program here)."""
    for root, _dirs, files in os.walk(src):
        target = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            os.symlink(os.path.join(root, name), os.path.join(target, name))


def run_program(req: dict, output_cap: int, sandboxed: bool) -> dict:
    started = time.monotonic()
    deadline = started + float(req["timeout"])
    workdir = tempfile.mkdtemp(prefix="run-", dir="/tmp" if sandboxed else None)
    os.chmod(workdir, 0o700)
    steps: list[dict] = []
    try:
        for src, name in req.get("copy", []):
            link_farm(src, os.path.join(workdir, name))
        for name, text in req["files"].items():
            with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                f.write(text)
        for step in req["steps"]:
            result = run_step(step, req, workdir, deadline, output_cap)
            steps.append(result)
            if result["timed_out"] or result["code"] != 0:
                break
    finally:
        sandbox_server.kill_everything(None)
        if sandboxed:
            clean = sandbox_server._empty("/tmp") and sandbox_server._empty("/dev/shm") and \
                sandbox_server._remove_sysv_ipc()
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            clean = not os.path.exists(workdir)
    return {"steps": steps, "clean": clean, "seconds": round(time.monotonic() - started, 4)}


def main() -> None:
    ctl_fd, config = int(sys.argv[1]), json.loads(sys.argv[2])
    sandbox_server._prctl(sandbox_server.PR_SET_CHILD_SUBREAPER, 1)
    sandbox_server._prctl(sandbox_server.PR_SET_DUMPABLE, 0)
    sandboxed = bool(config.get("sandboxed"))
    output_cap = int(config.get("output_cap", 1 << 16))
    ctl = socket.socket(fileno=ctl_fd)
    with open("/proc/self/status") as f:
        caps = [line.split()[1] for line in f if line.startswith("CapEff:")]
    wire.send(ctl, {"ready": True, "uid": os.getuid(), "pid": os.getpid(), "cap_eff": caps[0] if caps else None})
    while True:
        try:
            req = wire.recv(ctl)
        except (EOFError, OSError, wire.WireError):
            return
        try:
            reply = run_program(req, output_cap, sandboxed)
        except OSError as exc:
            reply = {"steps": [], "clean": False, "error": f"sandbox: {exc}"}
        wire.send(ctl, reply)


if __name__ == "__main__":
    main()
