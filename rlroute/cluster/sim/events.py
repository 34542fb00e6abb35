"""Operator and fault events of the simulated cluster: failure, recovery, pause/resume, cache flush,
weight update and scaling. Each is a method usable directly or by name through ``SimCluster.schedule``.

Semantics (mirroring the seed's SGLang operations):

* ``fail_instance`` (``mode`` crash | hang): the instance stops at once and loses its KV pool and cache;
  the work done on the requests it held is billed (:mod:`rlroute.cluster.sim.faults`). With the default
  ``fault_handling`` (sglang-router's), the router notices only after its health checks (or circuit
  breaker) do: until then new requests are still sent there and fail; every failed attempt is re-sent
  after a backoff, up to ``max_retries``, then the request fails with the failure as its reason. With
  ``detection: instant`` each held request is re-sent at once to a healthy instance (the earlier model).
* ``recover_instance``: back with an empty cache; after a detected failure it takes traffic again once
  the health checks pass (``health_success_threshold``).
* ``pause`` / ``resume``: SGLang ``pause_generation`` / ``continue_generation``; running requests keep
  their KV and stop at the end of the step in progress; new requests queue.
* ``flush_cache``: drop every cached block; blocks pinned by running requests are freed when they finish.
* ``update_weights``: pause, optionally flush, load for ``load_time_s``, then resume (the seed's
  coordinated update); the pool's ``last_weight_update`` is set to the start time.
* ``scale``: to ``n`` instances; new ones start empty, healthy after ``startup_s``; removed ones (highest indices) take
  no new requests, hand their queued requests back to the pool and leave when their running ones finish.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from rlroute.cluster.sim.faults import FAIL_MODES, FaultsMixin

if TYPE_CHECKING:
    from rlroute.cluster.sim.instance import Instance
    from rlroute.cluster.sim.job import Seq
    from rlroute.cluster.sim.pool import SimPool

EVENTS: tuple[str, ...] = ("fail_instance", "recover_instance", "pause", "resume", "flush_cache",
                           "update_weights", "scale")


class EventsMixin(FaultsMixin):
    """Event methods of :class:`~rlroute.cluster.sim.cluster.SimCluster`."""

    def _retry(self, s: Seq, reason: str, t: float) -> None: ...
    def _dispatch(self, pool: SimPool, seq: Seq, t: float) -> Instance | None: ...
    def schedule(self, time: float, event: str | Callable[[], Any], *args: Any, **kwargs: Any) -> None: ...

    def event(self, name: str) -> Callable[..., Any]:
        """The event method called ``name``."""
        if name not in EVENTS:
            raise ValueError(f"unknown cluster event {name!r}; choose from {EVENTS}")
        fn: Callable[..., Any] = getattr(self, name)
        return fn

    def _pool(self, pool: str) -> SimPool:
        if pool not in self.pools:
            raise ValueError(f"unknown pool {pool!r}; pools are {sorted(self.pools)}")
        return self.pools[pool]

    def _inst(self, pool: str, i: int) -> Instance:
        p = self._pool(pool)
        if not 0 <= i < len(p.instances):
            raise ValueError(f"pool {pool!r} has no instance {i} (has {len(p.instances)})")
        return p.instances[i]

    def fail_instance(self, pool: str, i: int, mode: str = "crash") -> None:
        """Instance ``i`` of ``pool`` fails now (``crash`` or ``hang``); its requests are re-sent or failed,
        never lost, and the work already done on them is billed."""
        if mode not in FAIL_MODES:
            raise ValueError(f"fail_instance: mode must be one of {FAIL_MODES}, got {mode!r}")
        inst = self._inst(pool, i)
        if not inst.healthy:
            return
        now = self._now
        self.bill_lost_work(inst, now)
        inst.healthy = False
        seqs = inst.evacuate()
        p = self._pool(pool)
        reason = f"instance {pool}[{i}] failed at t={now:.3f}s"
        if self.faults.detection == "instant":
            for s in seqs:
                self._retry(s, reason, now)
        else:
            epoch = p.fail_epoch.get(i, 0) + 1
            p.fail_epoch[i], p.undetected[i], p.fail_time[i], p.fail_mode[i] = epoch, now, now, mode
            p.cb_fails[i] = 0
            p.unroutable.discard(i)
            self._at(self.faults.detected_at(now), partial(self.detect, pool, i, epoch))
            for s in seqs:
                if mode == "crash":  # open connections reset now
                    self.attempt_failed(inst, s, reason + ": connection reset", now)
                else:  # a hung server answers nothing: each request times out on the router's clock
                    t_out = max(now, s.t_enq + self.faults.request_timeout_s)
                    self._at(t_out, partial(self.attempt_failed, inst, s, reason + ": request timed out", t_out))
        if inst.retired:  # was being scaled away: nothing left to drain
            p.prune()

    def recover_instance(self, pool: str, i: int) -> None:
        """Instance ``i`` of ``pool`` is up again, with an empty cache; after a detected failure the router
        sends it traffic once its health checks pass."""
        inst = self._inst(pool, i)
        if inst.healthy:
            return
        p = self._pool(pool)
        inst.healthy = True
        inst.paused = p.paused
        inst.clock = self._now
        if i in p.undetected:  # back before the router noticed
            del p.undetected[i]
            p.fail_epoch.pop(i, None)
        elif i in p.fail_epoch:
            epoch = p.fail_epoch[i] = p.fail_epoch[i] + 1
            p.unroutable.add(i)
            self._at(self.faults.routable_at(self._now), partial(self.make_routable, pool, i, epoch))

    def pause(self, pool: str) -> None:
        """Pause generation on every instance of ``pool`` (after the step in progress)."""
        p = self._pool(pool)
        p.paused = True
        for inst in p.instances:
            inst.paused = True
            inst.interrupt(self._now)

    def resume(self, pool: str) -> None:
        """Continue generation on ``pool``."""
        p = self._pool(pool)
        p.paused = False
        for inst in p.instances:
            inst.resume(self._now)

    def flush_cache(self, pool: str) -> None:
        """Flush the prefix cache of every instance of ``pool``."""
        p = self._pool(pool)
        for inst in p.instances:
            inst.cache.flush()
        if p.view is not None:  # the router orchestrates the flush, so its trees forget too (as the live monitor)
            p.view.clear()

    def update_weights(self, pool: str, load_time_s: float, flush: bool = True) -> None:
        """Coordinated weight update: pause, flush (optional), load for ``load_time_s``, resume."""
        if load_time_s < 0:
            raise ValueError(f"update_weights: load_time_s must be >= 0, got {load_time_s}")
        p = self._pool(pool)
        self.pause(pool)
        if flush:
            self.flush_cache(pool)
        p.last_weight_update = self._now
        p.weight_updates += 1
        self.schedule(self._now + load_time_s, "resume", pool)

    def scale(self, pool: str, n: int, startup_s: float = 0.0) -> None:
        """Scale ``pool`` to ``n`` serving instances; brand-new ones take ``startup_s`` seconds (weight
        loading, warm-up) before they are healthy."""
        if n < 1:
            raise ValueError(f"scale: a pool needs at least 1 instance, got n={n}")
        if startup_s < 0:
            raise ValueError(f"scale: startup_s must be >= 0, got {startup_s}")
        p = self._pool(pool)
        active = [i for i in p.instances if not i.retired]
        if n > len(active):
            for inst in p.instances:  # take back instances still draining before adding new ones
                if inst.retired and len(active) < n:
                    inst.retired = False
                    active.append(inst)
                    if inst.healthy and not inst.paused and inst.waiting:
                        inst.resume(self._now)
            while len(active) < n:
                new = p.add_instance()
                new.clock = self._now
                active.append(new)
                if startup_s > 0:
                    new.healthy = False
                    self.schedule(self._now + startup_s, "recover_instance", pool, new.index)
        elif n < len(active):
            for inst in sorted(active, key=lambda x: x.index)[n:]:
                inst.retired = True
                queued = list(inst.waiting)
                inst.waiting.clear()
                inst.nload -= len(queued)
                for s in queued:
                    self._dispatch(p, s, self._now)
            p.prune()
