"""A pool of sandboxed command servers (``command_server.py``), one per worker, each kept for many programs.

Each worker's server is started like the Python sandbox's candidate server (``judge_server.CandidateSandbox``):
bubblewrap with the same arguments (``judge_server.bwrap_command``), setpriv to the worker's own uid when run as
root, and the worker's cgroup (memory and process limits); in addition the toolchains and prepared dependencies
outside /usr are bound read-only. Where bubblewrap cannot start, the server runs with rlimits and the uid only,
and the isolation record says so (as the Python sandbox does). A server whose clean-up failed, or that stopped
answering, is replaced before the next program.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mft_eval import judge_server, wire
from mft_eval.humaneval_x.commands import Limits, Plan

SERVER = Path(__file__).with_name("command_server.py")
_START_LOCK = threading.Lock()  # Popen with preexec_fn (joining the cgroup) is not safe from several threads


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def with_binds(cmd: list[str], paths: Sequence[str]) -> list[str]:
    """``cmd`` (bubblewrap's argv up to ``--``) with read-only binds of ``paths`` added. Their parent directories
    are made (0755) right after the /usr bind, before bubblewrap creates any of them implicitly with 0700 (as the
    ``--ro-bind-try /etc/...`` files would make /etc), which the worker's uid could not enter."""
    parents: list[str] = []
    binds: list[str] = []
    for path in paths:
        path = os.path.realpath(path)
        if path.startswith("/usr/") or not os.path.exists(path):
            continue
        for parent in _parents(path):
            if parent not in parents and not parent.startswith("/usr"):
                parents.append(parent)
        binds += ["--ro-bind", path, path]
    early = [arg for parent in parents for arg in ("--perms", "0755", "--dir", parent)]
    at = cmd.index("/usr") + 2  # after "--ro-bind /usr /usr"
    cut = cmd.index("--")
    return cmd[:at] + early + cmd[at:cut] + binds + cmd[cut:]


class CommandSandbox(judge_server.CandidateSandbox):
    """One worker's command server (the candidate sandbox of the Python judge, with another server script)."""

    def __init__(self, slot: int, limits: Limits, ro_binds: Sequence[str], bubblewrap: bool = True,
                 output_cap: int = 1 << 16) -> None:
        super().__init__({"output_cap": output_cap, "bubblewrap": bubblewrap,
                          "uid": 50000 + (os.getpid() * 8 + slot) % 10000})
        self.slot, self.limits, self.ro_binds = slot, limits, list(ro_binds)

    def start(self) -> None:
        uid = self.config["uid"] if os.geteuid() == 0 and shutil.which("setpriv") else None
        if self.cgroup is None:
            self.cgroup = judge_server.WorkerCgroup(f"mft-eval-x-{os.getpid()}-{self.slot}",
                                                    self.limits.worker_memory_mb << 20, self.limits.max_processes + 64)
            self.cgroup.create()
        script = f"{judge_server.SANDBOX_MOUNT}/humaneval_x/{SERVER.name}"
        reason = None
        if self.config["bubblewrap"]:
            if shutil.which("bwrap") is None:
                reason = "bubblewrap (bwrap) is not installed"
            else:
                cmd = judge_server.bwrap_command(sys.executable, str(SERVER), uid)
                cmd = with_binds(cmd, self.ro_binds)[:-1] + [script]
                reason = self._launch(cmd, sandboxed=True)
                if reason is None:
                    self.info["isolation"] = {
                        "mechanism": "bubblewrap", "filesystem": "read-only system and toolchains, private /tmp "
                        "and /dev/shm", "network": "network-namespace", "pid": "pid-namespace", "ipc": "ipc-namespace",
                        "uid": self.info.get("uid") if uid is not None else None,
                        "capabilities": "none" if self.info.get("cap_eff") == "0000000000000000" else "kept",
                        "cgroup": self.cgroup.description, "read_only_binds": self.ro_binds,
                    }
                    return
                reason = f"bubblewrap failed to start: {reason}"
        else:
            reason = "bubblewrap disabled by the configuration"
        cmd = (judge_server.setpriv_command(uid) if uid is not None else []) + [sys.executable, "-I", str(SERVER)]
        failure = self._launch(cmd, sandboxed=False)
        if failure is not None:
            raise RuntimeError(f"the command server did not start: {failure}")
        self.info["isolation"] = {
            "mechanism": "none", "reason": reason, "filesystem": "none", "network": "none", "pid": "none",
            "ipc": "none", "uid": self.info.get("uid") if uid is not None else None,
            "capabilities": "none" if self.info.get("cap_eff") == "0000000000000000" else "kept",
            "cgroup": self.cgroup.description,
        }

    def request(self, plan: Plan, timeout: float) -> dict:
        if self.ctl is None:
            with _START_LOCK:
                self.start()
        assert self.ctl is not None
        req = {"files": plan.files, "copy": plan.copy, "steps": plan.steps, "timeout": timeout,
               "memory_mb": self.limits.memory_mb, "max_file_mb": self.limits.max_file_mb,
               "max_processes": self.limits.max_processes}
        reply = None
        try:
            wire.send(self.ctl, req)
            # the server enforces the deadline itself; this margin covers copying in and cleaning up
            if select.select([self.ctl], [], [], timeout + 30)[0]:
                reply = wire.recv(self.ctl)
        except (EOFError, OSError, wire.WireError):
            reply = None
        if not isinstance(reply, dict) or not reply.get("clean"):
            self.stop()  # broken, hung or dirty: replaced before the next program
        if not isinstance(reply, dict):
            return {"steps": [], "error": "the sandbox server died or hung while running this program"}
        return reply

    def close(self) -> None:
        self.stop()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


class CommandPool:
    """``workers`` command sandboxes; ``run_many`` runs plans in parallel, one program per worker at a time."""

    def __init__(self, workers: int, limits: Limits, ro_binds: Sequence[str], bubblewrap: bool = True) -> None:
        n = workers or 2 * (os.cpu_count() or 1)
        self.sandboxes = [CommandSandbox(slot, limits, ro_binds, bubblewrap) for slot in range(n)]
        self._free = list(self.sandboxes)
        self._lock = threading.Lock()

    def __enter__(self) -> CommandPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def isolation(self) -> dict:
        first = self.sandboxes[0]
        if first.ctl is None:
            with _START_LOCK:
                first.start()
        return dict(first.info["isolation"])

    def run(self, plan: Plan, timeout: float) -> dict:
        with self._lock:
            sandbox = self._free.pop()
        try:
            return sandbox.request(plan, timeout)
        finally:
            with self._lock:
                self._free.append(sandbox)

    def run_many(self, plans: Sequence[Plan], timeout: float,
                 on_done: Callable[[int, dict], None] | None = None) -> list[dict]:
        results: list[dict] = [{}] * len(plans)

        def work(index: int) -> None:
            results[index] = self.run(plans[index], timeout)
            if on_done is not None:
                on_done(index, results[index])

        with ThreadPoolExecutor(max_workers=len(self.sandboxes)) as pool:
            list(pool.map(work, range(len(plans))))
        return results

    def close(self) -> None:
        for sandbox in self.sandboxes:
            sandbox.close()
