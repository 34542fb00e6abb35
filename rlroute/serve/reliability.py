"""The router's reliability rules: retry budget and backoff, circuit breaker, health-check thresholds.

Semantics and defaults follow sglang-router (the ``sglang-router`` 0.3 wheel's ``router_args.py`` and
``sgl-router/src/config/types.rs`` in github.com/sgl-project/sglang):

* **retries** (``sgl-router/src/core/retry.rs``, ``RetryExecutor::execute_response_with_retry``): one loop
  of at most ``max_attempts`` attempts per request (sglang-router's ``retry_max_retries``: 5, the first
  attempt included); before attempt ``k + 1`` it sleeps ``initial_backoff_ms * multiplier**k`` capped at
  ``max_backoff_ms``, times ``1 + U[-jitter, +jitter]`` (defaults 50 ms, 1.5, 30 s, 0.2). Retried: a
  connection error, a timeout before the first byte, and the statuses 408, 429, 500, 502, 503, 504 (the
  statuses its HTTP router retries) — only while no byte has reached the client.
* **circuit breaker** (``sgl-router/src/core/circuit_breaker.rs``): closed → open after
  ``failure_threshold`` consecutive failures; open → half-open after ``timeout_s``; half-open → closed
  after ``success_threshold`` consecutive successes, back to open on any failure. sglang-router lets
  every request through while half-open; here half-open admits **one probe at a time** (a request or a
  health check), so a worker that is still broken costs one request, not a burst (stricter than the
  anchor, as the issue asks). Defaults 10 / 3 / 60 s as sglang-router.
* **health checks** (``HealthCheckConfig``): a worker turns unhealthy after ``failure_threshold``
  consecutive failed checks and healthy again after ``success_threshold`` consecutive passes (3 / 2).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts one request gets and how long to wait between them (module doc)."""

    max_attempts: int = 5
    initial_backoff_ms: float = 50.0
    max_backoff_ms: float = 30_000.0
    multiplier: float = 1.5
    jitter: float = 0.2

    def delay_s(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt that follows ``failures`` failed ones (``failures`` >= 1)."""
        base = min(self.initial_backoff_ms * self.multiplier ** max(0, failures - 1), self.max_backoff_ms)
        j = min(max(self.jitter, 0.0), 1.0)
        if j > 0.0:
            base *= 1.0 + (rng or random).uniform(-j, j)
        return max(0.0, base) / 1000.0

    @staticmethod
    def retryable(status: int) -> bool:
        """A response head with this status may go to another worker (nothing was sent to the client)."""
        return status in RETRYABLE_STATUS


class Breaker:
    """Circuit breaker of one worker: closed / open / half-open with one probe at a time (module doc).

    Args:
        failure_threshold: consecutive failures that open a closed breaker.
        success_threshold: consecutive successes that close a half-open breaker.
        timeout_s: how long an open breaker stays open before it lets a probe through.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, failure_threshold: int = 10, success_threshold: int = 3, timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.timeout_s = timeout_s
        self._clock = clock
        self._state = "closed"
        self.failures = 0  # consecutive, while closed
        self.successes = 0  # consecutive, while half-open
        self.opened_at = 0.0
        self.probing = False  # a half-open probe is in flight
        self.half_opens = 0  # open -> half-open transitions so far (admin status)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker turns half-open once ``timeout_s`` passed)."""
        if self._state == "open" and self._clock() - self.opened_at >= self.timeout_s:
            self._state, self.successes, self.probing = "half_open", 0, False
            self.half_opens += 1
        return self._state

    def allows(self) -> bool:
        """A request may be sent now: closed, or half-open with no probe in flight."""
        s = self.state
        return s == "closed" or (s == "half_open" and not self.probing)

    def acquire(self) -> bool:
        """Take the right to send one request; in half-open this is the single probe. False: not allowed."""
        s = self.state
        if s == "closed":
            return True
        if s == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def cancel(self) -> None:
        """An acquired request ended with no verdict on the worker (e.g. the client's own 4xx)."""
        self.probing = False

    def success(self) -> None:
        """A request (or a half-open probe) to the worker succeeded."""
        self.probing = False
        if self._state == "half_open":
            self.successes += 1
            if self.successes >= self.success_threshold:
                self._state, self.failures, self.successes = "closed", 0, 0
        else:
            self.failures = 0

    def failure(self) -> None:
        """A request (or a half-open probe) to the worker failed."""
        self.probing = False
        if self._state == "half_open":
            self._open()
        elif self._state == "closed":
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self._open()

    def _open(self) -> None:
        self._state, self.opened_at, self.successes, self.failures = "open", self._clock(), 0, 0


class Health:
    """A worker's health from consecutive check results (module doc); starts healthy."""

    def __init__(self, failure_threshold: int = 3, success_threshold: int = 2) -> None:
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.ok = True
        self.fails = 0
        self.passes = 0

    def record(self, passed: bool) -> bool:
        """Fold in one check; returns the (possibly new) health."""
        if passed:
            self.fails, self.passes = 0, self.passes + 1
            if not self.ok and self.passes >= self.success_threshold:
                self.ok = True
        else:
            self.passes, self.fails = 0, self.fails + 1
            if self.ok and self.fails >= self.failure_threshold:
                self.ok = False
        return self.ok
