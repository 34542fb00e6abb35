"""Live pools and instances: per-worker bookkeeping read and written by :mod:`rlroute.cluster.live.monitor`.

State semantics follow the simulator (:mod:`rlroute.cluster.sim`) so features mean the same in both:
recent hit rate and throughput decay with ``TAU``; recent TTFT/TPOT/e2e are EWMAs of completions;
``queued``/``running`` are the worker's scraped counts plus the requests the router sent since that
scrape (running when the worker's queue was empty, as an engine admits them at once; else queued).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson

from rlroute.cluster.base import EWMA, TAU, InstanceState, PoolState
from rlroute.cluster.inpool import InPoolPolicy, build_in_pool
from rlroute.cluster.live.scrape import WorkerStats, apply_load, parse_metrics
from rlroute.cluster.router_view import RouterView, RouterViewConfig
from rlroute.types import Request


@dataclass(slots=True)
class Stage:
    """One HTTP request of a job: pool, the client's cap (``max_new_tokens``), extra prompt tokens (a hybrid's
    plan) and where the reply ends (``output_tokens``, sent as the emulated worker's EOS header)."""

    pool: str
    max_new_tokens: int
    extra_tokens: int
    output_tokens: int


@dataclass(slots=True)
class StageResult:
    """What the worker's ``meta_info`` says about a finished stage (modelled seconds)."""

    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    e2e: float
    ttft: float
    tpot: float
    queue_time: float
    arrival_monotonic: float | None = None  # the emulated worker's arrival stamp (time.monotonic), if reported


class StageError(RuntimeError):
    """A stage could not be served; ``retries`` other instances were tried."""

    def __init__(self, message: str, retries: int) -> None:
        super().__init__(message)
        self.retries = retries


def parse_meta(body: Any) -> StageResult:
    """Read SGLang's ``/generate`` answer; ``ttft`` falls back to e2e when the server does not report it."""
    meta = body["meta_info"]
    out = int(meta["completion_tokens"])
    e2e = float(meta["e2e_latency"])
    ttft = float(meta["ttft"]) if meta.get("ttft") is not None else e2e
    return StageResult(
        prompt_tokens=int(meta["prompt_tokens"]), cached_tokens=int(meta.get("cached_tokens", 0)),
        output_tokens=out, e2e=e2e, ttft=ttft, tpot=(e2e - ttft) / (out - 1) if out > 1 else 0.0,
        queue_time=float(meta.get("queue_time") or 0.0),
        arrival_monotonic=float(meta["arrival_monotonic"]) if meta.get("arrival_monotonic") is not None else None)


def httpx_get(client: httpx.AsyncClient) -> Callable[[str], Awaitable[bytes]]:
    """:meth:`LiveInstance.fetch`'s ``get`` on an httpx client."""
    async def get(url: str) -> bytes:
        r = await client.get(url)
        r.raise_for_status()
        return r.content

    return get


class LiveInstance:
    """One worker as the router sees it."""

    def __init__(self, pool: str, index: int, url: str) -> None:
        self.pool, self.index, self.url = pool, index, url.rstrip("/")
        self.reset()

    def reset(self) -> None:
        """Forget scraped counters and averages (new episode)."""
        self.stats = WorkerStats()
        self.healthy, self.error = True, ""
        self.inflight = 0
        self.recent_ttft = self.recent_tpot = self.recent_e2e = self.cost = 0.0
        self.r_hit = self.r_tok = self.r_out = self.r_evict = 0.0
        self.r_t = 0.0
        self._seen: tuple[float, float, float, float] | None = None

    @property
    def worker_id(self) -> str:
        """A stable name that is not an address: ``<pool>-<index>`` (what the router tells clients)."""
        return f"{self.pool}-{self.index}"

    @property
    def up(self) -> bool:
        """The worker answers (last scrape or health check); the router adds its circuit breaker."""
        return self.healthy

    @property
    def usable(self) -> bool:
        """May take a new request now: up and generation not paused."""
        return self.up and not self.stats.paused

    @property
    def load(self) -> int:
        """Queued + running requests: the worker's scrape, or the router's in-flight count if higher."""
        return max(self.stats.running + self.stats.queued, self.inflight)

    async def fetch(self, get: Callable[[str], Awaitable[bytes]]) -> WorkerStats:
        """Scrape ``/metrics`` and ``/get_load`` concurrently and parse them; ``get(url)`` returns a URL's body
        and raises on a non-2xx answer (:func:`httpx_get` for an httpx client; the router uses aiohttp)."""
        m, load = await asyncio.gather(get(self.url + "/metrics"), get(self.url + "/get_load"))
        return apply_load(orjson.loads(load), parse_metrics(m.decode()))

    def absorb(self, res: WorkerStats | BaseException, now: float) -> None:
        """Take a scrape result: new stats and decayed counter deltas, or mark the worker unhealthy."""
        if isinstance(res, BaseException):
            self.healthy, self.error = False, f"{type(res).__name__}: {res}"
            return
        self._decay(now)
        counters = (res.cached_tokens_total, res.prompt_tokens_total, res.generation_tokens_total,
                    res.evicted_tokens_total)
        if self._seen is not None and all(c >= s for c, s in zip(counters, self._seen, strict=True)):
            self.r_hit += counters[0] - self._seen[0]
            self.r_tok += counters[1] - self._seen[1]
            self.r_out += counters[2] - self._seen[2]
            self.r_evict += counters[3] - self._seen[3]
        self._seen = counters  # a counter that went down means the worker restarted: skip that delta
        self.stats, self.healthy, self.error = res, True, ""

    def _decay(self, now: float) -> None:
        dt = now - self.r_t
        if dt > 0:
            f = math.exp(-dt / TAU)
            self.r_hit *= f
            self.r_tok *= f
            self.r_out *= f
            self.r_evict *= f
            self.r_t = now

    def record(self, res: StageResult, cost: float) -> None:
        """A stage finished here: update latency averages and cost (the monitor releases the in-flight count)."""
        self.recent_ttft += EWMA * (res.ttft - self.recent_ttft)
        self.recent_tpot += EWMA * (res.tpot - self.recent_tpot)
        self.recent_e2e += EWMA * (res.e2e - self.recent_e2e)
        self.cost += cost

    def snapshot(self, now: float, held: bool = False, tree_tokens: int = 0) -> InstanceState:
        """The instance's typed state (the features read these fields); ``held``: the router holds the pool;
        ``tree_tokens``: the router's tree for it, the cache size when the worker does not report one
        (capped at its KV capacity: the router's tree is not bounded by it)."""
        self._decay(now)
        s = self.stats
        running, queued = s.running, s.queued
        unseen = self.inflight - running - queued  # sent since the last scrape (or not counted by it yet)
        if unseen > 0:
            # Where the simulator would have put them: an engine with an empty queue admits new requests
            # at once (running); behind a queue, or while paused, they wait (queued).
            if queued == 0 and not s.paused:
                running += unseen
            else:
                queued += unseen
        return InstanceState(
            index=self.index, healthy=self.up, paused=s.paused or held, queued=queued, running=running,
            kv_used_tokens=s.kv_used_tokens, kv_capacity_tokens=max(1, s.kv_capacity_tokens),
            cache_tokens=s.cache_tokens if s.cache_tokens is not None else min(tree_tokens, max(1, s.kv_capacity_tokens)),
            recent_ttft=self.recent_ttft, recent_tpot=self.recent_tpot, recent_e2e=self.recent_e2e,
            throughput=self.r_out / TAU, cache_hit_rate=self.r_hit / self.r_tok if self.r_tok > 0 else 0.0,
            evictions_rate=self.r_evict / TAU, cost=self.cost)


class LivePool:
    """The instances of one pool, the in-pool policy, the router's prefix trees and pool-level averages.

    Args:
        name: pool name.
        cfg: ``{urls, in_pool}`` (``in_pool``: a ``conf/cluster/in_pool/`` preset).
        rng: generator for randomised in-pool policies.
        router_view: trim settings of the router's trees (:mod:`rlroute.cluster.router_view`, the class the
            simulator uses for its router view).
    """

    def __init__(self, name: str, cfg: dict[str, Any], rng: np.random.Generator,
                 router_view: RouterViewConfig | None = None) -> None:
        urls = list(cfg.get("urls") or [])
        if not urls:
            raise ValueError(f"cluster.pools.{name}.urls: expected a list of worker URLs, got {cfg.get('urls')!r}")
        self.name = name
        self.instances = [LiveInstance(name, i, str(u)) for i, u in enumerate(urls)]
        self.policy: InPoolPolicy = build_in_pool(cfg.get("in_pool"), f"cluster.pools.{name}.in_pool")
        self.policy.seed(rng)
        self.view = RouterView(len(urls), router_view)
        self.reset()

    def reset(self) -> None:
        """Forget averages and every instance's router-side state."""
        for inst in self.instances:
            inst.reset()
        self.policy.reset()
        self.view.reset()
        self.recent_ttft = self.recent_tpot = self.recent_e2e = self.slo_rate = self.cost = 0.0
        self.recent_out = 0.0
        self.r_cost, self.r_t = 0.0, 0.0
        self.held = False  # the router stops choosing this pool (coordinated weight update)
        self.last_weight_update: float | None = None

    def match(self, request: Request, covered: int, now: float) -> list[int]:
        """Router-estimated cached prompt tokens per instance (0 for unhealthy ones)."""
        out = self.view.match(request.blocks, request.block_size, covered, now)
        return [m if i.up else 0 for m, i in zip(out, self.instances, strict=True)]

    def record(self, res: StageResult, cost: float, now: float, slo_miss: bool) -> None:
        """Pool-level EWMAs and decayed cost rate, as the simulator's ``SimPool.record``."""
        self.recent_ttft += EWMA * (res.ttft - self.recent_ttft)
        self.recent_tpot += EWMA * (res.tpot - self.recent_tpot)
        self.recent_e2e += EWMA * (res.e2e - self.recent_e2e)
        self.recent_out += EWMA * (res.output_tokens - self.recent_out)
        self.slo_rate += EWMA * (float(slo_miss) - self.slo_rate)
        dt = now - self.r_t
        if dt > 0:
            self.r_cost *= math.exp(-dt / TAU)
            self.r_t = now
        self.r_cost += cost
        self.cost += cost

    def snapshot(self, now: float) -> PoolState:
        """Typed pool state with instance snapshots and recent-window aggregates."""
        tokens = self.view.tokens
        insts = [i.snapshot(now, self.held, tokens[i.index]) for i in self.instances]
        hit = sum(i.r_hit for i in self.instances)
        tok = sum(i.r_tok for i in self.instances)
        return PoolState(
            name=self.name, instances=insts, recent_ttft=self.recent_ttft, recent_tpot=self.recent_tpot,
            recent_e2e=self.recent_e2e, throughput=sum(s.throughput for s in insts),
            cache_hit_rate=hit / tok if tok > 0 else 0.0, slo_violation_rate=self.slo_rate,
            cost_rate=self.r_cost * math.exp(-max(0.0, now - self.r_t) / TAU) / TAU, cost=self.cost,
            recent_output_tokens=self.recent_out, last_weight_update=self.last_weight_update)
