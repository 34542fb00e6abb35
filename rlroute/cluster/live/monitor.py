"""The one live state keeper: what a router knows about its pools, shared by ``LiveCluster`` and ``rlroute serve``.

As vLLM production-stack keeps request statistics in one monitor (``stats/request_stats.py``) beside the
engine statistics parsed once (``stats/engine_stats.py``), every live user of rlroute reads and writes its
pools' state here and nowhere else: :class:`~rlroute.cluster.live.cluster.LiveCluster` is a monitor plus
its job runner, the router's :class:`~rlroute.serve.upstream.Upstreams` a monitor plus circuit breakers,
health checks and pause. The features a served policy sees are therefore built exactly as in the live
env, and both follow the simulator (:mod:`rlroute.cluster.sim`):

* **clock**: modelled seconds since the clock origin, ``(wall - t0) * speedup`` (``speedup`` is the emulated
  workers'; 1 for real SGLang). ``ClusterState.day_offset`` is the wall clock's second of the day (UTC) at
  the origin, so the time-of-day features follow the wall clock in every live user (the simulator's trace
  time counts from midnight, offset 0).
* **arrival rate**: every routed request counts at its decision (:meth:`Monitor.arrived`), decayed with the
  simulator's ``TAU`` (as ``SimCluster.submit`` counts it).
* **in-pool choice**: the pool's in-pool policy (:mod:`rlroute.cluster.inpool`) over loads, the router's
  prefix estimates and tree sizes, then the chosen worker's approximate tree records the prompt's blocks
  (:meth:`Monitor.choose`). The trees are :class:`rlroute.cluster.router_view.RouterView`, the class the
  simulator's router view uses (``router_view.enabled``, its default), with the same trim settings, so
  the cache features a served policy sees are computed as in training.
* **stage completion** (:meth:`Monitor.complete`): the worker's and the pool's latency EWMAs, the cost
  (the cluster's cost model) and the SLO outcome (TTFT or TPOT over the SLO), as ``SimCluster._on_done``;
  streamed and whole answers alike (:func:`answer_result` reads both shapes).
* **scrapes** (:meth:`Monitor.absorb`): queue/running/KV gauges, recent hit rate, throughput and eviction
  rate from the workers' cumulative counters (``sglang:evicted_tokens``).
* **weight updates** (:meth:`Monitor.weights_updated`): the pool's ``last_weight_update``.

Thread-safety: ``lock`` guards every mutation; ``LiveCluster`` runs its HTTP on a loop thread while the
env calls :meth:`state` from its own thread. The router runs on one event loop, where the lock is never
contended.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from rlroute.cluster.base import TAU, ClusterState
from rlroute.cluster.live.pool import LiveInstance, LivePool, StageResult
from rlroute.cluster.live.scrape import WorkerStats
from rlroute.types import Request

DAY_S = 86400.0
DEFAULT_SLO = {"ttft_s": 2.0, "tpot_s": 0.1}  # conf/cluster/default.yaml's assumed interactive SLOs


class Clock:
    """Modelled seconds since an origin, and the wall clock's second of the day at that origin.

    Args:
        speedup: modelled seconds per wall second.
    """

    def __init__(self, speedup: float = 1.0) -> None:
        if speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        self.speedup = float(speedup)
        self.restart()

    def restart(self, at: float = 0.0) -> None:
        """Let the clock read ``at`` now."""
        wall = time.time()
        self.t0 = time.monotonic() - at / self.speedup
        self.day_offset = (wall - at) % DAY_S

    def now(self) -> float:
        """Modelled seconds since the origin."""
        return (time.monotonic() - self.t0) * self.speedup

    def at(self, monotonic: float) -> float:
        """Modelled seconds since the origin at the ``time.monotonic()`` reading ``monotonic``."""
        return (monotonic - self.t0) * self.speedup


class Monitor:
    """Pools of live workers as the router sees them (see the module docstring).

    Args:
        pools: the pools, by name.
        cost_model: the cluster's cost model (``rlroute.cluster.cost``): cost of each finished stage.
        slo: ``{ttft_s, tpot_s}`` for the pools' SLO-violation rate (default ``DEFAULT_SLO``).
        speedup: modelled seconds per wall second (see :class:`Clock`).
    """

    def __init__(self, pools: Mapping[str, LivePool], cost_model: Any, slo: Mapping[str, float] | None = None,
                 speedup: float = 1.0) -> None:
        self.pools = dict(pools)
        self.cost_model = cost_model
        s = {**DEFAULT_SLO, **(slo or {})}
        self.slo_ttft, self.slo_tpot = float(s["ttft_s"]), float(s["tpot_s"])
        self.clock = Clock(speedup)
        self.lock = threading.Lock()
        self.r_arr, self.r_arr_t = 0.0, 0.0

    @property
    def now(self) -> float:
        """Modelled seconds since the clock origin."""
        return self.clock.now()

    def reset(self) -> None:
        """Forget every router-side estimate and restart the clock (a new episode)."""
        with self.lock:
            for pool in self.pools.values():
                pool.reset()
            self.r_arr, self.r_arr_t = 0.0, 0.0
            self.clock.restart()

    # -- reads ----------------------------------------------------------------------------------------------
    def state(self) -> ClusterState:
        """A fresh snapshot: scraped worker stats, the router's in-flight counts, averages and rates."""
        now = self.clock.now()
        with self.lock:
            pools = {name: pool.snapshot(now) for name, pool in self.pools.items()}
            self._decay_arrivals(now)
            rate = self.r_arr / TAU
        return ClusterState(time=now, pools=pools, arrival_rate=rate, day_offset=self.clock.day_offset)

    def prefix_match(self, request: Request) -> dict[str, list[int]]:
        """Prompt tokens ``request`` would find cached per instance (router-side estimate; 0 if down)."""
        covered = min(len(request.blocks) * request.block_size, request.input_len)
        now = self.clock.now()
        with self.lock:
            return {name: pool.match(request, covered, now) for name, pool in self.pools.items()}

    # -- writes ---------------------------------------------------------------------------------------------
    def arrived(self) -> None:
        """Count one routed request in the arrival rate (call once per decision, after deciding)."""
        now = self.clock.now()
        with self.lock:
            self._decay_arrivals(now)
            self.r_arr += 1.0

    def choose(self, pool: str, request: Request, extra_tokens: int = 0, exclude: set[int] | frozenset[int] = frozenset(),
               allow_paused: bool = False, prefer: int | None = None) -> LiveInstance | None:
        """The in-pool policy's pick among the pool's usable instances not in ``exclude``; None if none is left.

        The pick's approximate tree records the prompt's blocks and its in-flight count goes up by one
        (release it with :meth:`complete` or :meth:`release`).

        Args:
            pool: pool name.
            request: the request (its blocks and prompt length).
            extra_tokens: prompt tokens added to ``request.input_len`` (a hybrid's plan).
            exclude: instance indices already tried.
            allow_paused: when no unpaused instance is usable, pick among paused ones (their requests wait
                for ``/continue_generation``) rather than none.
            prefer: this instance index when it is among the usable ones (a pipelined hybrid's answer goes to
                the instance its prompt was warmed on), else the in-pool policy's pick.
        """
        p = self.pools[pool]
        covered = min(len(request.blocks) * request.block_size, request.input_len)
        now = self.clock.now()
        with self.lock:
            cands = [i for i in p.instances if i.usable and not p.held and i.index not in exclude]
            if not cands and allow_paused:
                cands = [i for i in p.instances if i.up and i.index not in exclude]
            if not cands:
                return None
            view = p.view
            full = view.match(request.blocks, request.block_size, covered, now)
            sizes = view.tokens
            pinned = [i for i in cands if i.index == prefer] if prefer is not None else []
            if pinned:
                inst = pinned[0]
            else:
                inst = cands[p.policy.choose([i.load for i in cands], [full[i.index] for i in cands],
                                             [sizes[i.index] for i in cands], request.input_len + extra_tokens)]
            inst.inflight += 1
            view.insert(inst.index, request.blocks, request.block_size, now, request.input_len + extra_tokens)
        return inst

    def release(self, inst: LiveInstance) -> None:
        """A request chosen for ``inst`` ended without an answer to record (error, refused, abandoned)."""
        with self.lock:
            inst.inflight -= 1

    def complete(self, pool: str, inst: LiveInstance, res: StageResult) -> float:
        """A stage finished on ``inst``: latency averages, cost, SLO outcome; returns the stage's cost."""
        cost = float(self.cost_model.request_cost(pool, res.prompt_tokens, res.cached_tokens, res.output_tokens))
        now = self.clock.now()
        with self.lock:
            inst.inflight -= 1
            inst.record(res, cost)
            self.pools[pool].record(res, cost, now, res.ttft > self.slo_ttft or res.tpot > self.slo_tpot)
        return cost

    def absorb(self, inst: LiveInstance, res: WorkerStats | BaseException) -> None:
        """Take one scrape of ``inst`` (new stats and counter deltas, or an error marking it down)."""
        now = self.clock.now()
        with self.lock:
            inst.absorb(res, now)

    def weights_updated(self, pool: str) -> None:
        """The pool's weights were updated now (``since_weight_update`` counts from here)."""
        now = self.clock.now()
        with self.lock:
            self.pools[pool].last_weight_update = now

    def forget_prefixes(self, pool: str) -> None:
        """The pool's caches were flushed: the router's prefix estimates are wrong too."""
        with self.lock:
            self.pools[pool].view.clear()

    def _decay_arrivals(self, now: float) -> None:
        dt = now - self.r_arr_t
        if dt > 0:
            self.r_arr *= math.exp(-dt / TAU)
            self.r_arr_t = now


def answer_result(body: Any, wall_ttft_s: float, wall_e2e_s: float, chunks: int, speedup: float) -> StageResult | None:
    """What one worker answer says about its stage, whatever its shape (None when it says nothing usable).

    SGLang's ``/generate`` (whole, or the last chunk of a stream) carries ``meta_info`` with modelled
    latencies and token counts: those are used as they are. OpenAI shapes carry only ``usage`` (token
    counts; a stream's last chunk carries it when the worker reports it): the latencies are then the
    router's own wall-clock measurements times ``speedup`` (TTFT = first byte of the answer, e2e = its
    end), and without ``usage`` the output is the number of streamed chunks (one token each, as SGLang
    streams).
    """
    if not isinstance(body, dict):
        return None
    meta = body.get("meta_info")
    if isinstance(meta, dict) and isinstance(meta.get("e2e_latency"), int | float):
        from rlroute.cluster.live.pool import parse_meta

        try:
            return parse_meta(body)
        except (KeyError, TypeError, ValueError):
            return None
    usage = body.get("usage")
    if isinstance(usage, dict):
        prompt = int(usage.get("prompt_tokens") or 0)
        out = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    elif chunks > 0:
        prompt, out, cached = 0, chunks, 0
    else:
        return None
    e2e = wall_e2e_s * speedup
    ttft = min(wall_ttft_s * speedup, e2e)
    return StageResult(prompt_tokens=prompt, cached_tokens=cached, output_tokens=out, e2e=e2e, ttft=ttft,
                       tpot=(e2e - ttft) / (out - 1) if out > 1 else 0.0, queue_time=0.0)
