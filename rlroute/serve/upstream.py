"""The router's view of its upstreams: the live state keeper plus circuit breakers, health checks and pause.

The pools' state is the :class:`rlroute.cluster.live.monitor.Monitor` that ``LiveCluster`` (the live env)
uses as well — scraped worker stats, arrival rate, in-pool choice with its prefix tree, latency, cost and
SLO accounting —, so the features a served policy sees are built as in training. On top the router adds
what serving needs: a circuit breaker per worker, a router-side hold of a pool (set during a coordinated
weight update) and a background loop that scrapes and health-checks every worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.cluster.cost import build_cost_model
from rlroute.cluster.live.monitor import Monitor
from rlroute.cluster.live.pool import LiveInstance, LivePool
from rlroute.cluster.profiles import load_profile
from rlroute.serve.config import ServeConfig
from rlroute.types import Request


class Breaker:
    """Consecutive-failure circuit breaker: open after ``threshold`` failures, half-open after ``cooldown_s``.

    While open the worker receives no traffic; once the cooldown has passed one request (or a passing
    health check) may try it: success closes the breaker, failure re-opens it for another cooldown.
    """

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.cooldown_s else "open"

    def allows(self) -> bool:
        """True when a request may go to this worker."""
        return self.state != "open"

    def success(self) -> None:
        """A request or health check succeeded."""
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        """A request or health check failed."""
        self.failures += 1
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = time.monotonic()


class RouterWorker(LiveInstance):
    """One upstream worker with the router's breaker and health state."""

    def __init__(self, pool: str, index: int, url: str, breaker: Breaker) -> None:
        super().__init__(pool, index, url)
        self.breaker = breaker
        self.health_ok = True

    @property
    def up(self) -> bool:
        """Answers its health checks and the breaker is not open."""
        return self.health_ok and self.breaker.allows()


class Upstreams:
    """Both pools' workers: the monitor (state, in-pool choice) and the health / breaker loop.

    Args:
        cfg: the router config.
        client: the shared pooled HTTP client.
    """

    def __init__(self, cfg: ServeConfig, client: httpx.AsyncClient) -> None:
        self.cfg = cfg
        self.client = client
        pools: dict[str, LivePool] = {}
        for name, pc in cfg.pools.items():
            pool = LivePool(name, {"urls": pc.workers, "in_pool": pc.in_pool}, np.random.default_rng(0),
                            cfg.router_view)
            pool.instances = [
                RouterWorker(name, i, u, Breaker(cfg.breaker_failures, cfg.breaker_cooldown_s))
                for i, u in enumerate(pc.workers)
            ]
            pools[name] = pool
        profiles = {n: load_profile(pc.profile) for n, pc in cfg.pools.items() if pc.profile}
        self.monitor = Monitor(pools, build_cost_model(cfg.cost, profiles), cfg.slo, cfg.speedup)
        self.pools = self.monitor.pools
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Modelled seconds since the router started (the monitor's clock)."""
        return self.monitor.now

    def workers(self, pool: str) -> list[RouterWorker]:
        """The pool's workers."""
        return [w for w in self.pools[pool].instances if isinstance(w, RouterWorker)]

    def available(self, pool: str) -> bool:
        """The pool can take a request now (not held by the router, some worker usable)."""
        return not self.pools[pool].held and any(w.usable for w in self.workers(pool))

    def inflight(self) -> int:
        """Requests the router has in flight to any worker."""
        return sum(w.inflight for pool in self.pools.values() for w in pool.instances)

    # -- state ------------------------------------------------------------------------------------------
    def state(self) -> ClusterState:
        """Typed snapshot for features and policies (the monitor's; held pools report paused instances)."""
        return self.monitor.state()

    def matches(self, request: Request) -> dict[str, list[int]]:
        """Router-estimated cached prompt tokens per worker, per pool."""
        return self.monitor.prefix_match(request)

    def choose(self, pool: str, request: Request, exclude: set[int], extra_tokens: int = 0) -> RouterWorker | None:
        """The in-pool policy's pick among usable workers not yet tried (None when none is left); the pick's
        in-flight count is raised (released by the monitor's ``complete`` or ``release``)."""
        w = self.monitor.choose(pool, request, extra_tokens, exclude)
        assert w is None or isinstance(w, RouterWorker)
        return w

    # -- background loop ----------------------------------------------------------------------------------
    async def _probe(self, w: RouterWorker, health: bool) -> None:
        if health:
            try:
                r = await self.client.get(w.url + "/health", timeout=self.cfg.health_timeout_s)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            w.health_ok = ok
            if ok:
                if w.breaker.state == "half_open":
                    w.breaker.success()
            else:
                w.breaker.failure()
        if not w.health_ok:
            return
        if self.cfg.backend == "sglang_router":
            return  # a router URL has no per-worker /metrics of its own to read
        try:
            res: Any = await asyncio.wait_for(w.fetch(self.client), self.cfg.health_timeout_s)
        except Exception as e:  # unreadable or unreachable: keep old stats, health check decides
            res = e
        if isinstance(res, BaseException):
            w.error = f"{type(res).__name__}: {res}"
            return
        self.monitor.absorb(w, res)

    async def refresh(self, health: bool = True) -> None:
        """Scrape (and optionally health-check) every worker once, concurrently."""
        ws = [w for name in self.pools for w in self.workers(name)]
        await asyncio.gather(*(self._probe(w, health) for w in ws))

    async def _loop(self) -> None:
        last_health = 0.0
        while True:
            t = time.monotonic()
            health = t - last_health >= self.cfg.health_interval_s
            if health:
                last_health = t
            await self.refresh(health)
            await asyncio.sleep(self.cfg.scrape_interval_s)

    def start(self) -> None:
        """Start the scrape / health loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="rlroute-upstreams")

    async def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
