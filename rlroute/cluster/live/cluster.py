"""``LiveCluster``: the :class:`~rlroute.cluster.base.Cluster` protocol over SGLang-protocol HTTP workers.

* **Time** is the workers' modelled time: ``(wall - t0) * speedup`` seconds (``speedup`` must match the
  emulated workers'; 1 for real SGLang). ``advance(until)`` sleeps the wall time to ``until``.
* **submit** picks an instance with the simulator's in-pool policy (cache_aware by default, fed with the
  router's own prefix estimates and load) and sends ``/generate`` asynchronously; hybrid is
  plan-and-execute (large writes ``plan_tokens``, small answers with them appended) or cascade, as in the
  simulator. Connection errors and 5xx are retried on another instance of the pool.
* **Completions** use the latencies the worker reports in ``meta_info`` (modelled seconds; HTTP overhead,
  which is real wall time and not sped up, is excluded). A hybrid's latency is the sum of its stages.
* **state** is kept by the :class:`~rlroute.cluster.live.monitor.Monitor` the router uses too (arrival
  rate, in-pool choice, latency/cost/SLO accounting, scraped worker stats); scraping ``/metrics`` and
  ``/get_load`` runs as a background task on the I/O loop every ``scrape_interval_s`` of wall time, so a
  decision never waits for HTTP.

``LiveCluster`` is that monitor plus its job runner (this module: stages over HTTP, retries, revival).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import numpy as np

from rlroute.cluster.base import ClusterState, Hybrid, action_stages
from rlroute.cluster.cost import build_cost_model
from rlroute.cluster.live.client import IDS_FIELD, LoopThread, generate_body, prompt_field, stage_headers
from rlroute.cluster.live.monitor import Monitor
from rlroute.cluster.live.pool import (
    LiveInstance,
    LivePool,
    Stage,
    StageError,
    StageResult,
    httpx_get,
    parse_meta,
)
from rlroute.cluster.profiles import load_profile
from rlroute.cluster.router_view import RouterViewConfig
from rlroute.types import Action, Completion, Request


class LiveCluster:
    """Pools of live SGLang-protocol workers behind the :class:`~rlroute.cluster.base.Cluster` protocol.

    Args:
        pools: pool name -> ``{urls: [...], profile: <serving profile name> (cost model), in_pool:
            <conf/cluster/in_pool/ preset>}``.
        cost: the simulator's cost config (``mode: tokens|gpu_seconds``, ...).
        hybrid: ``{mode: plan_and_execute|cascade, plan_tokens}`` (``pipelined`` is refused at submit: only
            the simulator and the serving router implement it).
        speedup: modelled seconds per wall second (the emulated workers' ``speedup``).
        max_retries: further attempts after a connection error or 5xx (on other instances first).
        revive_wait_s: wall seconds a stage waits for a downed instance to answer ``/health`` again when
            no healthy instance is left in its pool.
        slo: ``{ttft_s, tpot_s}`` for the pools' SLO-violation rate.
        scrape_interval_s: wall seconds between two background scrapes of every worker.
        request_timeout_s: wall timeout of one HTTP request.
        seed: seeds the in-pool policy's randomness (power_of_two).
        router_view: trim settings of the router's prefix trees (``conf/cluster/router_view/``; the class and
            settings the simulator's router view uses).
    """

    def __init__(self, pools: Mapping[str, Mapping[str, Any]], cost: Mapping[str, Any] | None = None,
                 hybrid: Any = None, speedup: float = 1.0, max_retries: int = 3, revive_wait_s: float = 10.0,
                 slo: Mapping[str, float] | None = None, scrape_interval_s: float = 0.1,
                 request_timeout_s: float = 60.0, seed: int = 0,
                 router_view: Mapping[str, Any] | None = None) -> None:
        if not pools:
            raise ValueError("cluster.pools is empty: configure at least one pool with worker urls")
        if speedup <= 0:
            raise ValueError(f"cluster.speedup must be > 0, got {speedup}")
        self.speedup = float(speedup)
        self.max_retries = int(max_retries)
        self.revive_wait_s = float(revive_wait_s)
        self.scrape_interval_s = float(scrape_interval_s)
        self.hybrid = Hybrid.of(hybrid)
        rng = np.random.default_rng(seed)
        rv = RouterViewConfig.for_router(router_view, "cluster.router_view")
        live = {name: LivePool(name, dict(p), rng, rv) for name, p in pools.items()}
        cost_model = build_cost_model(
            cost, {n: load_profile(str(p["profile"])) for n, p in pools.items() if "profile" in p} or {})
        self.monitor = Monitor(live, cost_model, slo, self.speedup)
        self.pools = self.monitor.pools
        self.cost_model = cost_model
        self._lock = threading.Lock()  # completions and the in-flight count (pool state: the monitor's lock)
        self._done: list[Completion] = []
        self._inflight = 0
        self._idle = threading.Condition(self._lock)
        self._io = LoopThread(timeout_s=request_timeout_s)
        self._last_scrape = -math.inf
        self._anchor = True  # the first submit/advance sets the clock (see advance)
        self._prepared: dict[int, bytes] = {}  # request id -> its prompt field, encoded ahead (prepare)
        self.scrape(force=True)
        self._io.spawn(self._scrape_forever())

    def __call__(self, rng: np.random.Generator | None = None) -> LiveCluster:
        """Episode factory for ``RoutingEnv(cluster=...)``: reset for a new episode and return ``self``.

        ``gymnasium.make("rlroute/Routing-v1", cluster=live)`` calls this at every ``reset``; the live pools
        persist across episodes, so they are drained and flushed instead of rebuilt.
        """
        self.reset()
        return self

    # -- Cluster protocol ------------------------------------------------------------------------------
    @property
    def now(self) -> float:
        """Modelled seconds since the clock was (re)started."""
        return self.monitor.now

    def state(self) -> ClusterState:
        """A fresh snapshot from the monitor: scraped worker stats, in-flight counts, averages and rates."""
        return self.monitor.state()

    def prefix_match(self, request: Request) -> dict[str, list[int]]:
        """Prompt tokens ``request`` would find cached per instance (router-side estimate; 0 if unhealthy)."""
        return self.monitor.prefix_match(request)

    def submit(self, request: Request, action: Action | int) -> None:
        """Send ``request`` (waiting for its arrival time first); returns before the workers answer."""
        if request.input_len < 1 or request.output_len < 1:
            raise ValueError(f"request {request.id}: input_len and output_len must be >= 1, got "
                             f"{request.input_len}/{request.output_len}")
        if self._anchor:  # first event of an episode: the clock starts at this arrival
            self.monitor.clock.restart(request.arrival)
            self._anchor = False
        if request.arrival > self.now:
            time.sleep((request.arrival - self.now) / self.speedup)
        act = Action(action)
        if act == Action.HYBRID and self.hybrid.mode == "pipelined":
            raise ValueError("hybrid.mode 'pipelined' is implemented in the simulator and the serving router "
                             "(rlroute serve), not in LiveCluster: use plan_and_execute or cascade here")
        # The worker is asked for the client's cap (SGLang's admission reserves from it, as the simulator's
        # instances do) and told where the reply ends (the emulated model's EOS header).
        n_in = request.input_len
        stages = [Stage(pool, max(output, cap), prompt - n_in, output)
                  for pool, prompt, output, cap in action_stages(act, request, self.hybrid)]
        now = self.now
        with self._lock:
            self._inflight += 1
        self.monitor.arrived()
        self._io.spawn(self._run_job(request, act, stages, now))

    def advance(self, until: float) -> list[Completion]:
        """Wait (wall time) until cluster time ``until``; return the completions received since last call.

        The first call after :meth:`reset` moves the clock to ``until`` instead of sleeping, so an episode that
        starts at a trace offset does not wait for it.
        """
        if self._anchor:
            self.monitor.clock.restart(until)
            self._anchor = False
        ahead = until - self.now
        if ahead > 0:
            time.sleep(ahead / self.speedup)
        with self._lock:
            out, self._done = self._done, []
        return out

    # -- beyond the protocol ---------------------------------------------------------------------------
    def prepare(self, requests: Iterable[Request]) -> None:
        """Encode the prompt field of each request's body now, before its send time (an open-loop sender calls
        this ahead of the clock). Without it the body is built when the request is sent, on the I/O loop, in
        series with the sends of the same instant: building and encoding up to 70k ids take milliseconds of
        wall time, ``speedup`` times more in modelled time, and a long prompt then reaches its worker after
        shorter ones sent after it. Held until the request's job ends or :meth:`reset`."""
        for r in requests:
            self._prepared[r.id] = prompt_field(r)

    @property
    def in_flight(self) -> int:
        """Requests sent whose completion has not arrived."""
        return self._inflight

    def drain(self, timeout_s: float = 120.0) -> list[Completion]:
        """Wait (wall seconds) until every submitted request has completed; return pending completions."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._inflight == 0, timeout=timeout_s):
                raise TimeoutError(f"drain: {self._inflight} requests still in flight after {timeout_s}s")
            out, self._done = self._done, []
        return out

    def reset(self, flush_cache: bool = True) -> None:
        """Start a new episode: drain, optionally flush every worker's cache, forget router state, clock to 0."""
        self.drain()
        if flush_cache:
            self._io.call(self._all("POST", "/flush_cache"), timeout=30.0)
        self.monitor.reset()
        self._anchor = True
        self._prepared.clear()
        self.scrape(force=True)

    def pause(self, pool: str) -> None:
        """``/pause_generation`` in ``in_place`` mode on every worker of ``pool``: requests are held where they
        are, as the simulator's pause holds them (SGLang's default mode, ``abort``, would end them)."""
        self._io.call(self._all("POST", "/pause_generation", pool, {"mode": "in_place"}), timeout=30.0)

    def resume(self, pool: str) -> None:
        """``/continue_generation`` on every worker of ``pool``."""
        self._io.call(self._all("POST", "/continue_generation", pool), timeout=30.0)

    def flush_cache(self, pool: str) -> None:
        """``/flush_cache`` on every worker of ``pool`` (and forget the router's prefix estimates)."""
        self._io.call(self._all("POST", "/flush_cache", pool), timeout=30.0)
        self.monitor.forget_prefixes(pool)

    def update_weights(self, pool: str, model_path: str) -> None:
        """``/update_weights_from_disk`` on every worker of ``pool``; ``since_weight_update`` restarts."""
        self._io.call(self._all("POST", "/update_weights_from_disk", pool, {"model_path": model_path}),
                      timeout=60.0)
        self.monitor.weights_updated(pool)

    def scrape(self, force: bool = False) -> None:
        """Scrape every worker now (concurrently) and wait for it; the background task does this on its own.

        Args:
            force: scrape even if the last scrape is younger than ``scrape_interval_s``.
        """
        if not force and time.monotonic() - self._last_scrape < self.scrape_interval_s:
            return
        self._io.call(self._scrape_once(), timeout=30.0)

    async def _scrape_once(self) -> None:
        self._last_scrape = time.monotonic()
        insts = [i for p in self.pools.values() for i in p.instances]
        results = await self._scrape_all(insts)
        for inst, res in zip(insts, results, strict=True):
            self.monitor.absorb(inst, res)

    async def _scrape_forever(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(self.scrape_interval_s)
            await self._scrape_once()

    def close(self) -> None:
        """Stop the background loop and close connections (in-flight requests are abandoned)."""
        self._io.close()

    def __enter__(self) -> LiveCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------------
    async def _scrape_all(self, insts: list[LiveInstance]) -> list[Any]:
        import asyncio

        get = httpx_get(self._io.client)
        return await asyncio.gather(*(i.fetch(get) for i in insts), return_exceptions=True)

    async def _all(self, method: str, path: str, pool: str | None = None, body: Any = None) -> None:
        insts = [i for n, p in self.pools.items() if pool in (None, n) for i in p.instances]
        await asyncio.gather(*(self._io.client.request(method, i.url + path, json=body) for i in insts),
                             return_exceptions=True)

    async def _probe(self, pool: LivePool) -> None:
        """``GET /health`` on the pool's down instances; a 200 brings one back before the next scrape."""
        client = self._io.client

        async def one(inst: LiveInstance) -> None:
            try:
                ok = (await client.get(inst.url + "/health", timeout=1.0)).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                with self.monitor.lock:
                    inst.healthy, inst.error = True, ""

        await asyncio.gather(*(one(i) for i in pool.instances if not i.up))

    async def _run_stage(self, pool: LivePool, req: Request, stage: Stage) -> tuple[StageResult, LiveInstance, int]:
        """Choose an instance (the monitor's in-pool choice), POST ``/generate``, retry elsewhere on connection
        errors and 5xx.

        When every instance has been tried or is down, waits up to ``revive_wait_s`` (wall) for one to answer
        ``/health`` again (a restarted worker) before giving up.

        Raises:
            StageError: retries exhausted, nothing healthy within ``revive_wait_s``, or a 4xx answer.
        """
        mon, client = self.monitor, self._io.client
        prompt = self._prepared.get(req.id) if not stage.extra_tokens else None
        prompt = prompt or prompt_field(req, stage.extra_tokens)
        body = generate_body(stage.max_new_tokens, prompt)
        headers = stage_headers(req, stage, prompt.startswith(IDS_FIELD))
        tried: set[int] = set()
        errors: list[str] = []
        deadline = time.monotonic() + self.revive_wait_s
        while True:
            inst = mon.choose(pool.name, req, stage.extra_tokens, tried, allow_paused=True)
            if inst is None:
                if time.monotonic() >= deadline:
                    why = "; ".join(errors) or "all instances unhealthy"
                    raise StageError(f"no healthy instance in pool {pool.name!r} within {self.revive_wait_s}s "
                                     f"({why})", len(errors))
                await asyncio.sleep(0.2)
                await self._probe(pool)
                if len(tried) >= len(pool.instances):
                    tried.clear()  # every instance failed once: the restarted ones may be tried again
                continue
            r: httpx.Response | None = None
            try:
                r = await client.post(inst.url + "/generate", content=body, headers=headers)
            except httpx.HTTPError as e:
                err = f"{inst.url}: {type(e).__name__}"
            else:
                err = f"{inst.url}: HTTP {r.status_code}" if r.status_code >= 500 else ""
            if r is not None and not err:
                if r.status_code >= 400:  # 4xx: the request itself is bad; another worker would refuse it too
                    mon.release(inst)
                    raise StageError(f"{inst.url} refused the request: HTTP {r.status_code} {r.text[:200]}",
                                     len(errors))
                try:
                    return parse_meta(r.json()), inst, len(errors)
                except (KeyError, TypeError, ValueError) as e:
                    err = f"{inst.url}: unreadable /generate answer ({e})"
            mon.release(inst)
            if r is None:
                with mon.lock:
                    inst.healthy, inst.error = False, err  # connection-level: out until /health or a scrape
            tried.add(inst.index)
            errors.append(err)
            if len(errors) > self.max_retries:
                raise StageError(f"pool {pool.name!r}: gave up after {len(errors)} attempts ({'; '.join(errors)})",
                                 len(errors))

    async def _run_job(self, req: Request, action: Action, stages: list[Stage], t0: float) -> None:
        pools: list[str] = []
        insts: list[int] = []
        prompt = cached = out = retries = 0
        elapsed = ttft = tpot = queue = cost = 0.0
        start = t0  # when the job reached its first worker (cluster time); the send time unless reported
        failed: str | None = None
        try:
            for stage in stages:
                pool = self.pools[stage.pool]
                try:
                    res, inst, tries = await self._run_stage(pool, req, stage)
                except StageError as e:
                    failed, retries = str(e), retries + e.retries
                    break
                retries += tries
                if not pools:
                    start = self._arrival(res, t0)
                stage_cost = self.monitor.complete(stage.pool, inst, res)
                ttft = elapsed + res.ttft
                tpot, elapsed = res.tpot, elapsed + res.e2e
                queue += res.queue_time
                prompt, cached, out = prompt + res.prompt_tokens, cached + res.cached_tokens, out + res.output_tokens
                cost += stage_cost
                pools.append(stage.pool)
                insts.append(inst.index)
        except Exception as e:  # never lose a request: any bug or cancellation becomes a failed completion
            failed = f"{type(e).__name__}: {e}"
        q = req.quality
        comp = Completion(
            request_id=req.id, action=action, arrival=req.arrival, finish=start + elapsed, queue_time=queue,
            ttft=0.0 if failed else ttft, tpot=0.0 if failed else tpot, e2e=elapsed, prompt_tokens=prompt,
            cached_tokens=cached, output_tokens=out, cost=cost,
            quality_ok=q.ok[int(action)] if q is not None else None, pools=tuple(pools), instances=tuple(insts),
            failed=failed is not None, fail_reason=failed, retries=retries)
        self._prepared.pop(req.id, None)
        with self._idle:
            self._done.append(comp)
            self._inflight -= 1
            self._idle.notify_all()

    def _arrival(self, res: StageResult, sent: float) -> float:
        """When the first stage reached its worker, in cluster time: the emulated worker's arrival stamp
        (``meta_info.arrival_monotonic``, the machine's monotonic clock) when it lies between the send time
        and the answer (a worker on this machine), else the send time. Completions then start where the
        workers' timings start: a request's own encoding, connection and transfer, ``speedup`` times longer
        in modelled time, are not counted before it (they reorder bursts: ``experiments/vs_sglang_router``)."""
        if res.arrival_monotonic is None:
            return sent
        at = self.monitor.clock.at(res.arrival_monotonic)
        slack = 0.01 * self.speedup  # 10 ms of wall time
        return at if sent - slack <= at <= self.now - res.e2e + slack else sent

