"""Start and stop emulated workers (``rlroute worker``) as real processes on loopback.

Used by the live-cluster tests, ``rlroute bench replay`` set-ups and ``experiments/vs_sglang_router``.
Each worker is its own process on a free port; :class:`WorkerFleet` waits for ``/health`` and stops every
process it started by PID (terminate, then kill), also when used as a context manager that exits on error.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rlroute.paths import REPO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(procs: list[subprocess.Popen[bytes]], grace_s: float = 5.0) -> None:
    """SIGTERM every process still running, then SIGKILL those not gone after ``grace_s``; idempotent."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=grace_s)


@dataclass(slots=True)
class WorkerSpec:
    """One emulated worker: pool, serving profile and ``rlroute worker`` overrides."""

    pool: str
    profile: str
    speedup: float = 100.0
    overrides: list[str] = field(default_factory=list)


@dataclass(slots=True)
class WorkerProc:
    """A running worker process."""

    spec: WorkerSpec
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """Base URL of the worker."""
        return f"http://127.0.0.1:{self.port}"


class WorkerFleet:
    """Emulated workers started as subprocesses; ``urls(pool)`` for the cluster/router config.

    Args:
        specs: the workers to start.
        log_dir: where each worker's stdout/stderr goes.
        startup_timeout_s: wall seconds to wait for every ``/health``.
    """

    def __init__(self, specs: list[WorkerSpec], log_dir: Path, startup_timeout_s: float = 60.0) -> None:
        self.specs = specs
        self.log_dir = Path(log_dir)
        self.timeout = startup_timeout_s
        self.workers: list[WorkerProc] = []

    def start(self) -> WorkerFleet:
        """Spawn every worker and wait until all answer ``/health`` (stops them all on failure)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for i, spec in enumerate(self.specs):
                self.workers.append(self._spawn(spec, i))
            deadline = time.monotonic() + self.timeout
            for w in self.workers:
                self._wait_healthy(w, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, spec: WorkerSpec, i: int) -> WorkerProc:
        port = free_port()
        log = self.log_dir / f"worker-{i}-{spec.pool}-{port}.log"
        cmd = [sys.executable, "-m", "rlroute.cli", "worker", f"port={port}", f"pool={spec.pool}",
               f"profile={spec.profile}", f"speedup={spec.speedup}", *spec.overrides]
        with log.open("wb") as fh:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return WorkerProc(spec, port, proc, log)

    def _wait_healthy(self, w: WorkerProc, deadline: float) -> None:
        while time.monotonic() < deadline:
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.url} exited with {w.proc.returncode}; log {w.log}:\n"
                                   f"{w.log.read_text()[-2000:]}")
            try:
                if httpx.get(w.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"worker {w.url} not healthy after {self.timeout}s; log {w.log}")

    def urls(self, pool: str) -> list[str]:
        """URLs of the workers of ``pool``, in start order."""
        return [w.url for w in self.workers if w.spec.pool == pool]

    def kill(self, i: int) -> None:
        """Kill worker ``i`` abruptly (SIGKILL: a crash, for fault tests)."""
        w = self.workers[i]
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(timeout=10)

    def restart(self, i: int) -> None:
        """Start worker ``i`` again on the same port (after :meth:`kill`)."""
        old = self.workers[i]
        self.kill(i)
        cmd = [sys.executable, "-m", "rlroute.cli", "worker", f"port={old.port}", f"pool={old.spec.pool}",
               f"profile={old.spec.profile}", f"speedup={old.spec.speedup}", *old.spec.overrides]
        with old.log.open("ab") as fh:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        self.workers[i] = WorkerProc(old.spec, old.port, proc, old.log)
        self._wait_healthy(self.workers[i], time.monotonic() + self.timeout)

    @contextmanager
    def kill_cycle(self, every_s: float) -> Iterator[list[dict[str, float | str]]]:
        """While the block runs, SIGKILL a worker every ``every_s`` wall seconds and restart it on its port.

        Victims cycle over the workers of pools with at least two instances (a pool's only worker dying is
        an outage, not a fault a router can hide). The k-th kill is due ``k * every_s`` after entry; a late
        restart delays the next kill, so at most one worker is down at a time. Yields the list the events go
        into: victim (``<pool>-<index>``), ``killed_at_s`` and ``back_at_s`` (wall seconds after entry).
        """
        victims = [i for i, w in enumerate(self.workers) if len(self.urls(w.spec.pool)) >= 2]
        events: list[dict[str, float | str]] = []
        stop = threading.Event()
        t0 = time.monotonic()

        def killer() -> None:
            k = 0
            while victims and not stop.wait(max(0.0, (k + 1) * every_s - (time.monotonic() - t0))):
                i = victims[k % len(victims)]
                w = self.workers[i]
                t = time.monotonic() - t0
                self.kill(i)
                self.restart(i)
                events.append({"worker": f"{w.spec.pool}-{self.urls(w.spec.pool).index(w.url)}",
                               "killed_at_s": round(t, 3), "back_at_s": round(time.monotonic() - t0, 3)})
                k += 1

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        try:
            yield events
        finally:
            stop.set()
            th.join()

    def stop(self) -> None:
        """Terminate every started process by PID (kill after 5 s); idempotent."""
        terminate([w.proc for w in self.workers])

    def __enter__(self) -> WorkerFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sglang_router(urls: list[str], log: Path, policy: str = "cache_aware") -> tuple[subprocess.Popen[bytes], str]:
    """A real sglang-router (the Rust wheel, ``policy``, otherwise its defaults) over ``urls`` on a free
    loopback port, with its own ``--prometheus-port``; waits for ``/health``. The caller stops it by PID
    (:func:`terminate`). Raises ``RuntimeError`` with the log's tail when it does not come up in 60 s."""
    port = free_port()
    cmd = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
           "--worker-urls", *urls, "--policy", policy, "--prometheus-port", str(free_port()),
           "--log-level", "warn"]
    return launch_until_healthy(cmd, f"http://127.0.0.1:{port}", log, "sglang-router")


def launch_until_healthy(cmd: list[str], url: str, log: Path, what: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``cmd`` (its output to ``log``) and wait up to 60 s for ``url``'s ``/health`` to answer 200; the
    caller stops it by PID (:func:`terminate`). Raises ``RuntimeError`` naming ``what`` with the log's tail
    when it does not come up."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    proc.wait(timeout=10)
    raise RuntimeError(f"{what} did not come up; log {log}:\n{log.read_text()[-1500:]}")
