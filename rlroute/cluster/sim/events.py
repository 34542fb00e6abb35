"""Operator and fault events of the simulated cluster: failure, recovery, pause/resume, cache flush,
weight update and scaling. Each is a method usable directly or by name through ``SimCluster.schedule``.

Semantics (mirroring the seed's SGLang operations):

* ``fail_instance``: the instance stops at once and loses its KV pool and cache; each request it held
  (queued or running) restarts from scratch on another healthy instance of the pool, counting a retry,
  or fails with the failure as its reason when none is left or ``max_retries`` is exceeded.
* ``recover_instance``: back to healthy with an empty cache.
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlroute.cluster.sim.instance import Instance, Seq
    from rlroute.cluster.sim.pool import SimPool

EVENTS: tuple[str, ...] = ("fail_instance", "recover_instance", "pause", "resume", "flush_cache",
                           "update_weights", "scale")


class EventsMixin:
    """Event methods of :class:`~rlroute.cluster.sim.cluster.SimCluster`."""

    pools: dict[str, SimPool]
    _now: float

    def _retry(self, s: Seq, reason: str, t: float) -> None: ...
    def _route(self, pool: SimPool, seq: Seq, t: float) -> None: ...
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

    def fail_instance(self, pool: str, i: int) -> None:
        """Instance ``i`` of ``pool`` fails now; its requests are re-queued or failed (never lost)."""
        inst = self._inst(pool, i)
        if not inst.healthy:
            return
        inst.healthy = False
        reason = f"instance {pool}[{i}] failed at t={self._now:.3f}s"
        for s in inst.evacuate():
            self._retry(s, reason, self._now)
        if inst.retired:  # was being scaled away: nothing left to drain
            self._pool(pool).prune()

    def recover_instance(self, pool: str, i: int) -> None:
        """Instance ``i`` of ``pool`` is healthy again, with an empty cache."""
        inst = self._inst(pool, i)
        if inst.healthy:
            return
        inst.healthy = True
        inst.paused = self._pool(pool).paused
        inst.clock = self._now

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
        for inst in self._pool(pool).instances:
            inst.cache.flush()

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
                    self._route(p, s, self._now)
            p.prune()
