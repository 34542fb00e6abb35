"""Instance failures as a production router sees them: late detection, failed attempts, retries with
backoff, and the work a failure throws away.

The router in front of each pool is modelled on sglang-router (``sglang_router/router_args.py``,
``RouterArgs`` of sglang-router 0.3.2, the version this project installs; the Rust router takes the same
defaults):

* **health checks**: every ``health_check_interval_secs`` = 60 s; a worker is marked unhealthy after
  ``health_failure_threshold`` = 3 consecutive failed checks and healthy again after
  ``health_success_threshold`` = 2 consecutive good ones. Checks run at multiples of the interval from
  t = 0 (a modelling choice: the phase of a real checker is arbitrary), so an instance that dies at ``t``
  is detected at ``ceil(t / I) * I + (threshold - 1) * I``; one that comes back at ``t`` takes traffic
  again at ``ceil(t / I) * I + (success_threshold - 1) * I``.
* **circuit breaker**: ``cb_failure_threshold`` = 10 consecutive failed requests open a worker's circuit;
  here an open circuit on a dead instance counts as detection (the half-open probes after
  ``cb_timeout_duration_secs`` would fail again, so the worker stays out until the health checks agree).
* **retries**: ``retry_max_retries`` = 5 attempts in all (``--disable-retries`` = 1), so ``max_retries``
  = 4 re-sends; the n-th re-send waits ``min(50 ms * 1.5**(n-1), 30 s)`` x (1 +- 20 % jitter)
  (``retry_initial_backoff_ms`` 50, ``retry_backoff_multiplier`` 1.5, ``retry_max_backoff_ms`` 30000,
  ``retry_jitter_factor`` 0.2); each re-send is placed by the pool's in-pool policy again, and may land on
  the same dead instance while it is undetected (it looks idle: its queue was emptied).
* **failure modes**: ``crash`` (the process is gone: open connections reset and new ones are refused at
  once) or ``hang`` (the process still accepts connections but never answers: each request fails when the
  router's ``request_timeout_secs`` = 1800 s runs out).

Lost work: prompt tokens already prefilled and output tokens already generated on a failed instance are
billed to the request (its ``cost``) and counted per pool (``lost_cost``, ``lost_gpu_s``: engine seconds x
GPUs, the GPU-seconds model of :mod:`rlroute.cluster.cost`); the step in progress counts as busy time.
``detection: instant`` keeps the earlier model (failure seen at once, immediate re-route without backoff).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from itertools import count

    import numpy as np

    from rlroute.cluster.base import CostModel
    from rlroute.cluster.cost import GpuSecondsCost
    from rlroute.cluster.sim.instance import Instance
    from rlroute.cluster.sim.job import Job, Seq
    from rlroute.cluster.sim.pool import SimPool

DETECTION = ("health_check", "instant")
FAIL_MODES = ("crash", "hang")


@dataclass(frozen=True, slots=True)
class FaultHandling:
    """The router's fault handling (module doc: sglang-router 0.3.2 defaults)."""

    detection: str = "health_check"
    health_check_interval_s: float = 60.0
    health_failure_threshold: int = 3
    health_success_threshold: int = 2
    cb_failure_threshold: int = 10
    retry_initial_backoff_s: float = 0.05
    retry_max_backoff_s: float = 30.0
    retry_backoff_multiplier: float = 1.5
    retry_jitter: float = 0.2
    request_timeout_s: float = 1800.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> FaultHandling:
        """Parse ``cluster.fault_handling``; unknown keys and bad values name the key."""
        cfg = dict(cfg or {})
        names = {f.name for f in fields(cls)}
        bad = set(cfg) - names
        if bad:
            raise ValueError(f"cluster.fault_handling: unknown keys {sorted(bad)}; expected {sorted(names)}")
        out = cls(**cfg)
        if out.detection not in DETECTION:
            raise ValueError(f"cluster.fault_handling.detection must be one of {DETECTION}, got {out.detection!r}")
        for f in fields(cls):
            v = getattr(out, f.name)
            if f.name != "detection" and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ValueError(f"cluster.fault_handling.{f.name} must be a number >= 0, got {v!r}")
        for k in ("health_check_interval_s", "health_failure_threshold", "health_success_threshold",
                  "cb_failure_threshold"):
            if getattr(out, k) <= 0:
                raise ValueError(f"cluster.fault_handling.{k} must be > 0, got {getattr(out, k)!r}")
        return out

    def next_check(self, t: float) -> float:
        """The first health check at or after ``t``."""
        i = self.health_check_interval_s
        return math.ceil(t / i - 1e-12) * i

    def detected_at(self, t_fail: float) -> float:
        """When a failure at ``t_fail`` is detected by the health checks alone."""
        return self.next_check(t_fail) + (self.health_failure_threshold - 1) * self.health_check_interval_s

    def routable_at(self, t_up: float) -> float:
        """When an instance back up at ``t_up`` takes traffic again."""
        return self.next_check(t_up) + (self.health_success_threshold - 1) * self.health_check_interval_s

    def backoff(self, attempt: int, u: float) -> float:
        """Wait before re-send number ``attempt`` (1-based); ``u`` uniform in [0, 1) for the jitter."""
        base = min(self.retry_initial_backoff_s * self.retry_backoff_multiplier ** (attempt - 1), self.retry_max_backoff_s)
        return base * (1.0 + self.retry_jitter * (2.0 * u - 1.0))


def lost_work(inst: Instance, s: Seq, where: str, now: float) -> tuple[int, int]:
    """(prompt tokens prefilled, output tokens generated) of ``s`` on ``inst`` by ``now`` that its next
    attempt has to compute again; ``where`` = ``waiting`` | ``prefill`` | ``decode``.

    Completed steps only. A sequence retracted earlier (``gen`` > 0: back in the queue or prefilling
    again) counts its whole prompt and the tokens it had generated; the progress of such a re-prefill is
    not counted."""
    if s.t_admit < 0:  # never admitted
        return 0, 0
    full = s.prompt - s.cached
    if where == "decode":  # context c0 + step: c0 = prompt + gen - join (both instance models)
        return full, _steps_done(inst, now) + s.c0 - s.prompt
    if s.gen > 0:
        return full, s.gen
    return (full - s.prefill_left, 0) if where == "prefill" else (0, 0)


def _steps_done(inst: Instance, now: float) -> int:
    """Engine steps completed by ``now``: those before the segment in progress plus the decode steps of that
    segment already finished (the run's step times form an arithmetic series, as in ``Instance.interrupt``)."""
    from rlroute.cluster.sim.instance import DECODE

    if inst.seg != DECODE:
        return inst.step
    elapsed, base, h = now - inst.seg_t0, inst.seg_base, inst.seg_h
    k = 0
    if elapsed > 0:
        k = int(elapsed / base) if h == 0 else int((-(base - 0.5 * h) + math.sqrt((base - 0.5 * h) ** 2 + 2 * h * elapsed)) / h)
        while k > 0 and k * base + h * k * (k - 1) * 0.5 > elapsed:
            k -= 1
        while (k + 1) * base + h * (k + 1) * k * 0.5 <= elapsed:
            k += 1
    return inst.step + min(k, inst.seg_steps)


class FaultsMixin:
    """Failure handling of :class:`~rlroute.cluster.sim.cluster.SimCluster` (module doc)."""

    pools: dict[str, SimPool]
    faults: FaultHandling
    max_retries: int
    cost_model: CostModel
    gpu_clock: GpuSecondsCost
    _now: float
    _heap: list[tuple[float, int, Any, int]]
    _tick: count[int]
    _rng: np.random.Generator

    def _fail(self, job: Job, reason: str, t: float) -> None: ...
    def _dispatch(self, pool: SimPool, seq: Seq, t: float) -> Instance | None: ...
    def _new_seq(self, job: Job) -> Seq:
        raise NotImplementedError  # SimCluster

    def _at(self, t: float, fn: Callable[[], Any]) -> None:
        heapq.heappush(self._heap, (t, next(self._tick), fn, -1))

    def bill_lost_work(self, inst: Instance, now: float) -> None:
        """Charge the work done on the requests ``inst`` holds (thrown away by its failure) to them."""
        if inst.seg:  # the step in progress ran on the GPUs too
            inst.busy_time += max(0.0, now - inst.seg_t0)
        pool = self.pools[inst.pool]
        held = ([(s, "waiting") for s in inst.waiting] + [(s, "prefill") for s in inst.prefill]
                + [(e[2], "decode") for e in inst.dec])
        for s, where in held:
            prefilled, generated = lost_work(inst, s, where, now)
            if prefilled <= 0 and generated <= 0:
                continue
            prompt = s.cached + prefilled
            cost = self.cost_model.request_cost(inst.pool, prompt, s.cached, generated)
            s.job.cost += cost
            inst.cost += cost
            pool.lost_cost += cost
            pool.lost_gpu_s += self.gpu_clock.gpu_seconds(inst.pool, prompt, s.cached, generated)

    def attempt_failed(self, inst: Instance, s: Seq, reason: str, t: float) -> None:
        """One attempt of ``s`` on ``inst`` failed at ``t``: count it against the instance, re-send after a
        backoff or give up."""
        pool = self.pools[inst.pool]
        if inst.index in pool.undetected:
            pool.cb_fails[inst.index] = pool.cb_fails.get(inst.index, 0) + 1
            if pool.cb_fails[inst.index] >= self.faults.cb_failure_threshold:
                self.detect(inst.pool, inst.index, pool.fail_epoch[inst.index])
        job = s.job
        if job.warms is not None:  # a warm-up is not re-sent: the answer will prefill the prompt itself
            self._fail(job, reason, t)
            return
        job.retries += 1
        if job.retries > self.max_retries:
            self._fail(job, f"{reason}; gave up after {self.max_retries} retries", t)
            return
        delay = self.faults.backoff(job.retries, float(self._rng.random()) if self.faults.retry_jitter else 0.5)
        self._at(t + delay, partial(self._resend, job))

    def _resend(self, job: Job) -> None:
        self._dispatch(self.pools[job.stages[job.stage][0]], self._new_seq(job), self._now)

    def hit_dead(self, inst: Instance, s: Seq, t: float) -> None:
        """The router placed ``s`` on ``inst``, which is down but not yet detected: a crashed process refuses
        the connection at once, a hung one lets the request time out."""
        reason = f"instance {inst.pool}[{inst.index}] down, not yet detected"
        if self.pools[inst.pool].fail_mode.get(inst.index) == "hang":
            t_out = t + self.faults.request_timeout_s
            self._at(t_out, partial(self.attempt_failed, inst, s, reason + ": request timed out", t_out))
        else:
            self.attempt_failed(inst, s, reason + ": connection refused", t)

    def detect(self, pool: str, i: int, epoch: int) -> None:
        """The router marks instance ``i`` of ``pool`` unhealthy (if that failure is still current)."""
        p = self.pools[pool]
        if p.fail_epoch.get(i) == epoch and i in p.undetected:
            del p.undetected[i]
            p.cb_fails.pop(i, None)
            p.detections.append((p.fail_time.get(i, self._now), self._now))

    def make_routable(self, pool: str, i: int, epoch: int) -> None:
        """Enough good health checks: instance ``i`` takes traffic again."""
        p = self.pools[pool]
        if p.fail_epoch.get(i) == epoch:
            p.unroutable.discard(i)
            del p.fail_epoch[i]


__all__ = ["DETECTION", "FAIL_MODES", "FaultHandling", "FaultsMixin", "lost_work"]
