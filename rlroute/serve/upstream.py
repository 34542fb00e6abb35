"""The router's view of its upstreams: the live state keeper plus circuit breakers, health checks and pause.

The pools' state is the :class:`rlroute.cluster.live.monitor.Monitor` that ``LiveCluster`` (the live env)
uses as well — scraped worker stats, arrival rate, in-pool choice with its prefix tree, latency, cost and
SLO accounting —, so the features a served policy sees are built as in training. On top the router adds
what serving needs: a circuit breaker and a health record per worker (:mod:`rlroute.serve.reliability`),
a router-side hold of a pool (set during a coordinated weight update) and one background watch per
worker that scrapes it and checks its health on its own schedule, each call bounded by
``health_timeout_s`` — a hung worker delays only its own watch, never the others' (sglang-router checks
each worker in its own task as well: ``sgl-router/src/core/worker.rs``, ``start_health_checker``).

The watches' calls go over their own pooled aiohttp session, on the serving loop. Not httpx (the router's
control client for admin calls): a scrape (``/metrics`` + ``/get_load``) cost ~1.5-1.8 ms of the loop's CPU
over httpx and ~0.5-0.6 ms over aiohttp, a health check ~0.6 vs ~0.1-0.2 ms (one emulated worker, thread CPU per
call, 2026-12-06: ``experiments/benchmarks/control_call_cost.py``) — with two workers that was ~8 ms of every second in chunks of up to ~1.8 ms, during which
a data-plane request waits: the size of the p99 the router adds (``experiments/benchmarks/README.md``).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.cluster.cost import build_cost_model
from rlroute.cluster.live.monitor import Monitor
from rlroute.cluster.live.pool import LiveInstance, LivePool
from rlroute.cluster.profiles import load_profile
from rlroute.serve.config import ServeConfig
from rlroute.serve.reliability import Breaker, Health
from rlroute.types import Request


class RouterWorker(LiveInstance):
    """One upstream worker with the router's breaker and health state."""

    def __init__(self, pool: str, index: int, url: str, breaker: Breaker, health: Health) -> None:
        super().__init__(pool, index, url)
        self.breaker = breaker
        self.health = health
        self.scraped_at = time.monotonic()  # last successful scrape
    @property
    def health_ok(self) -> bool:
        """Its health checks pass (by the failure / success thresholds)."""
        return self.health.ok

    @property
    def up(self) -> bool:
        """Healthy, and its breaker lets a request through (closed, or half-open with no probe out)."""
        return self.health.ok and self.breaker.allows()


class Upstreams:
    """Both pools' workers: the monitor (state, in-pool choice) and the health / breaker loop.

    Args:
        cfg: the router config.
        headers: sent with every watch call (the upstream ``Authorization``, when configured).
    """

    def __init__(self, cfg: ServeConfig, headers: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.headers = headers or {}
        self.session: aiohttp.ClientSession | None = None  # the watches' own; opened on the serving loop
        pools: dict[str, LivePool] = {}
        for name, pc in cfg.pools.items():
            pool = LivePool(name, {"urls": pc.workers, "in_pool": pc.in_pool}, np.random.default_rng(0),
                            cfg.router_view)
            pool.instances = [
                RouterWorker(name, i, u, Breaker(cfg.breaker_failures, cfg.breaker_successes, cfg.breaker_cooldown_s),
                             Health(cfg.health_failures, cfg.health_successes))
                for i, u in enumerate(pc.workers)
            ]
            pools[name] = pool
        profiles = {n: load_profile(pc.profile) for n, pc in cfg.pools.items() if pc.profile}
        self.monitor = Monitor(pools, build_cost_model(cfg.cost, profiles), cfg.slo, cfg.speedup)
        self.pools = self.monitor.pools
        # the workers are fixed once built: listed once, not filtered per request
        self._workers = {name: [w for w in p.instances if isinstance(w, RouterWorker)] for name, p in self.pools.items()}
        self._all = [w for ws in self._workers.values() for w in ws]
        self._tasks: list[asyncio.Task[None]] = []

    def now(self) -> float:
        """Modelled seconds since the router started (the monitor's clock)."""
        return self.monitor.now

    def workers(self, pool: str) -> list[RouterWorker]:
        """The pool's workers."""
        return self._workers[pool]

    def available(self, pool: str) -> bool:
        """The pool can take a request now (not held by the router, some worker usable)."""
        return not self.pools[pool].held and any(w.usable for w in self._workers[pool])

    def inflight(self) -> int:
        """Requests the router has in flight to any worker."""
        n = 0
        for w in self._all:
            n += w.inflight
        return n

    # -- state ------------------------------------------------------------------------------------------
    def state(self) -> ClusterState:
        """Typed snapshot for features and policies (the monitor's; held pools report paused instances)."""
        return self.monitor.state()

    def matches(self, request: Request) -> dict[str, list[int]]:
        """Router-estimated cached prompt tokens per worker, per pool."""
        return self.monitor.prefix_match(request)

    def choose(self, pool: str, request: Request, exclude: set[int], extra_tokens: int = 0,
               prefer: int | None = None) -> RouterWorker | None:
        """The in-pool policy's pick among usable workers not yet tried (``prefer`` if it is one of them; None
        when none is left); the pick's in-flight count is raised (released by the monitor's ``complete`` or
        ``release``)."""
        w = self.monitor.choose(pool, request, extra_tokens, exclude, prefer=prefer)
        assert w is None or isinstance(w, RouterWorker)
        return w

    # -- background watches ---------------------------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0), headers=self.headers,
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",),
                timeout=aiohttp.ClientTimeout(total=self.cfg.health_timeout_s, connect=self.cfg.connect_timeout_s))
        return self.session

    async def get(self, url: str) -> bytes:
        """``url``'s body over the watches' session (within ``health_timeout_s``); raises on a non-2xx answer."""
        async with self._session().get(url) as r:
            r.raise_for_status()
            return await r.read()

    async def check(self, w: RouterWorker) -> bool:
        """One health check of ``w`` (``GET /health`` within ``health_timeout_s``), folded into its record;
        while its breaker is half-open and no request probes it, the check is the probe. Returns its result."""
        try:
            async with self._session().get(w.url + "/health") as r:
                await r.read()
                ok = r.status == 200
        except Exception:  # noqa: BLE001 - no answer of any kind is a failed check (the watch must not die)
            ok = False
        w.health.record(ok)
        if w.breaker.state == "half_open" and w.breaker.acquire():
            if ok:
                w.breaker.success()
            else:
                w.breaker.failure()
        return ok

    async def scrape(self, w: RouterWorker) -> None:
        """Read ``w``'s ``/metrics`` and ``/get_load`` within ``health_timeout_s`` (a failure keeps the old
        stats: health checks decide whether the worker is down)."""
        if not w.health_ok or self.cfg.backend == "sglang_router":
            return  # a router URL has no per-worker /metrics of its own to read
        try:
            res = await asyncio.wait_for(w.fetch(self.get), self.cfg.health_timeout_s)
        except Exception as e:  # noqa: BLE001 - unreadable or unreachable
            w.error = f"{type(e).__name__}: {e}"
            return
        self.monitor.absorb(w, res)
        w.scraped_at = time.monotonic()

    async def refresh(self, health: bool = True) -> None:
        """Scrape (and optionally health-check) every worker once, concurrently."""
        async def one(w: RouterWorker) -> None:
            if health:
                await self.check(w)
            await self.scrape(w)

        await asyncio.gather(*(one(w) for name in self.pools for w in self.workers(name)))

    async def _watch(self, w: RouterWorker) -> None:
        """``w``'s own loop: a scrape every ``scrape_interval_s``, a health check every ``health_interval_s``."""
        last_health = time.monotonic()
        while True:
            await asyncio.sleep(self.cfg.scrape_interval_s)
            t = time.monotonic()
            if t - last_health >= self.cfg.health_interval_s:
                last_health = t
                if not await self.check(w):
                    continue  # no answer to the check: a scrape would only wait out its timeout too
            await self.scrape(w)

    def start(self) -> None:
        """Start one watch per worker on the running event loop."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._watch(w), name=f"rlroute-watch-{w.pool}-{w.index}")
                           for name in self.pools for w in self.workers(name)]

    async def stop(self) -> None:
        """Stop the watches and close their session."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.session is not None:
            await self.session.close()
            self.session = None
