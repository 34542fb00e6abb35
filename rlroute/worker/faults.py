"""Failure knobs of the emulated worker, after sglang-router's Python test worker.

sglang-router's ``py_test`` fixtures start mock workers that can add latency, fail a share of requests
with a status code, fail the first N requests, hang, or die, so the router's retries, health checks and
circuit breaker can be exercised. The same knobs live here, set from the CLI/Hydra config or changed at
run time through ``POST /rlroute/faults`` (tests flip them without restarting the process).
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import asdict, dataclass, fields
from typing import Any

CONTROL_PATHS = ("", "/pause_generation", "/update_weights_from_disk", "/flush_cache", "/continue_generation")


@dataclass
class Faults:
    """Knobs applied to every generation request (``/generate``, ``/v1/*``).

    Attributes:
        latency_ms: wall milliseconds added before the request is handled.
        error_rate: probability in [0, 1] of answering ``status_code`` instead of generating.
        status_code: HTTP status of injected errors (4xx/5xx).
        fail_first: the first N generation requests answer ``status_code``.
        hang: requests never answer (until the client gives up).
        crash_after: the process exits abruptly (``os._exit``) when generation request number N arrives;
            0 disables.
        health_status: status code ``/health`` answers (200 = healthy).
        fail_path: a control endpoint (``/pause_generation``, ``/update_weights_from_disk``, ``/flush_cache``,
            ``/continue_generation``) that answers 500 without doing anything ("" = none): a weight update
            failing midway on one worker.
        seed: seed of the error-rate draws.
    """

    latency_ms: float = 0.0
    error_rate: float = 0.0
    status_code: int = 500
    fail_first: int = 0
    hang: bool = False
    crash_after: int = 0
    health_status: int = 200
    fail_path: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()
        self._rng = random.Random(self.seed)
        self._seen = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the knob that is out of range."""
        if self.latency_ms < 0:
            raise ValueError(f"faults.latency_ms must be >= 0, got {self.latency_ms}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"faults.error_rate must be in [0, 1], got {self.error_rate}")
        if not 400 <= self.status_code <= 599:
            raise ValueError(f"faults.status_code must be a 4xx/5xx code, got {self.status_code}")
        if self.fail_first < 0 or self.crash_after < 0:
            raise ValueError("faults.fail_first and faults.crash_after must be >= 0")
        if not 100 <= self.health_status <= 599:
            raise ValueError(f"faults.health_status must be an HTTP status, got {self.health_status}")
        if self.fail_path not in CONTROL_PATHS:
            raise ValueError(f"faults.fail_path must be one of {CONTROL_PATHS}, got {self.fail_path!r}")

    def update(self, changes: dict[str, Any]) -> None:
        """Change knobs by name; unknown names raise ``KeyError``."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise KeyError(f"unknown fault knob(s) {unknown}; known: {sorted(names)}")
        old = asdict(self)
        for k, v in changes.items():
            setattr(self, k, type(old[k])(v))
        try:
            self.validate()
        except ValueError:
            for k, v in old.items():
                setattr(self, k, v)
            raise
        if "seed" in changes:
            self._rng = random.Random(self.seed)
        if "fail_first" in changes or "crash_after" in changes:
            self._seen = 0

    def as_dict(self) -> dict[str, Any]:
        """Current knob values."""
        return asdict(self)

    async def apply(self) -> int | None:
        """Run the knobs for one generation request; returns an error status to answer, or None."""
        self._seen += 1
        if self.crash_after and self._seen >= self.crash_after:
            os._exit(3)  # an abrupt crash: no cleanup, connections reset, like a killed server
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000.0)
        if self.hang:
            await asyncio.Event().wait()  # forever, until the client disconnects
        if self._seen <= self.fail_first:
            return self.status_code
        if self.error_rate and self._rng.random() < self.error_rate:
            return self.status_code
        return None
