"""Start and stop a router (``rlroute serve``) as a real process on loopback, for tests and benchmarks.

Workers are started with :class:`rlroute.cluster.live.launch.WorkerFleet`; this is the router's
counterpart. The process is stopped by PID (terminate, then kill after 5 s), also when start-up fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rlroute.cluster.live.launch import free_port, terminate
from rlroute.paths import REPO


class RouterProc:
    """A running ``rlroute serve`` process.

    Args:
        large: worker URLs of the large pool.
        small: worker URLs of the small pool.
        log: file that receives the router's stdout/stderr.
        overrides: extra Hydra overrides (``policy.path=...``, ``retries=...``).
        env: extra environment (e.g. ``RLROUTE_ADMIN_TOKEN``).
        startup_timeout_s: wall seconds to wait for ``/health`` to answer.
        launcher: the command that runs the CLI (default ``python -m rlroute.cli``); ``serve`` and the
            overrides follow it (e.g. a script that patches the router first: the parity mutation test).
    """

    def __init__(self, large: list[str], small: list[str], log: Path, overrides: list[str] | None = None,
                 env: dict[str, str] | None = None, startup_timeout_s: float = 60.0,
                 launcher: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"  # the admin API's own listener
        self.log = Path(log)
        cmd = [*(launcher or [sys.executable, "-m", "rlroute.cli"]), "serve", f"port={self.port}", f"admin_port={self.admin_port}",
               f"pools.large.workers=[{','.join(large)}]", f"pools.small.workers=[{','.join(small)}]",
               *(overrides or [])]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        try:
            self._wait(startup_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}; log {self.log}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                httpx.get(self.url + "/health", timeout=1.0)
                httpx.get(self.admin_url + "/docs", timeout=1.0)
                return  # any answer (200 or 503) means the servers are up
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"router {self.url} not answering after {timeout_s}s; log {self.log}")

    def stop(self) -> None:
        """Terminate by PID (kill after 5 s); idempotent."""
        terminate([self.proc])

    def __enter__(self) -> RouterProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
