"""``SimCluster``: the discrete-event simulator of heterogeneous pools behind the ``Cluster`` protocol.

One event heap drives every instance (see :mod:`rlroute.cluster.sim.instance`): an entry is an
instance's next step boundary (stale entries are skipped by a version check) or a scheduled operator
event (failure, weight update, ...; see :mod:`rlroute.cluster.sim.events`). ``advance(until)`` pops
events up to ``until``; ``submit`` places a request at the current time.

A routed request is a *job* with one or two *stages*: large or small is one stage; hybrid
plan-and-execute is a plan on the large pool (``plan_length`` output tokens) followed by the answer on
the small pool with the plan appended to the prompt; hybrid pipelined is the same, plus a prefill-only
warm-up of the prompt placed on a small instance at submit, beside the plan, and the answer placed on that
instance (the in-pool policy again if it is no longer routable); hybrid cascade is the small pool, then the
large pool again when ``request.quality.escalated``. Each job yields exactly one :class:`Completion` (failed
ones carry ``fail_reason``), so conservation holds by construction and is tested under faults. A warm-up
yields none: its cost goes to the job it warms, and a failed warm-up is dropped, never retried (the answer
then prefills the prompt itself).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from heapq import heappop as _heappop
from heapq import heappush as _heappush
from itertools import count
from typing import Any

import numpy as np

from rlroute.cluster.base import EWMA, ClusterState, CostModel, Hybrid, Stage, action_stages, warmup_stage
from rlroute.cluster.cost import GpuSecondsCost, build_cost_model
from rlroute.cluster.profiles import ServingProfile, load_profile
from rlroute.cluster.router_view import RouterViewConfig
from rlroute.cluster.sim.events import EventsMixin
from rlroute.cluster.sim.faults import FaultHandling
from rlroute.cluster.sim.instance import DecayClock, Instance
from rlroute.cluster.sim.job import Job, Seq
from rlroute.cluster.sim.pool import SimPool
from rlroute.cluster.sim.view import StateView
from rlroute.types import Action, Completion, Request

_ACTIONS: dict[Any, Action] = {int(a): a for a in Action}  # Action(x) for the usual ints, without EnumType.__call__


def _get(obj: Any, key: str, default: Any) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


class SimCluster(EventsMixin):
    """Simulated pools of SGLang-like instances; implements :class:`rlroute.cluster.base.Cluster`.

    Args:
        pools: pool name -> ``{profile, instances, cache: {mem_fraction_static, eviction, ttl_s},
            in_pool: <conf/cluster/in_pool/ preset>}`` (see ``conf/cluster/default.yaml``).
        cost: ``{mode: tokens|gpu_seconds, prices: {...}, usd_per_gpu_hour, ref_batch}``.
        hybrid: ``{mode: plan_and_execute|pipelined|cascade, plan_tokens, plan_sigma, plan_cap}`` (a mapping, a
            :class:`~rlroute.cluster.base.Hybrid` or any object with those attributes, e.g. the quality
            config's ``hybrid`` block); default plan-and-execute, a fixed 64-token plan. Kept as :attr:`hybrid`.
        max_retries: re-sends allowed per request after failed attempts before it fails (sglang-router's
            ``retry_max_retries`` 5 attempts = 4 re-sends).
        fault_handling: the router's failure detection, circuit breaker, retry backoff and request timeout
            (:class:`rlroute.cluster.sim.faults.FaultHandling`; default sglang-router's defaults;
            ``{detection: instant}`` = failures seen at once, re-sent without backoff).
        slo: ``{ttft_s, tpot_s}`` used for the pools' ``slo_violation_rate``.
        events: scheduled operator events, ``[{time, event, **kwargs}]`` (see :meth:`schedule`).
        seed: seeds the in-pool ``power_of_two`` sampler when ``rng`` is not given.
        rng: generator for in-pool randomness.
        log_evictions: record evicted block ids per instance (tests).
        day_offset: second of the day at cluster time 0, for the time-of-day features (0: the trace's time
            counts from midnight; live pools use the wall clock's, see ``rlroute.cluster.live.monitor``).
        router_view: ``{enabled, eviction_interval_s, max_tree_tokens}``
            (:class:`rlroute.cluster.router_view.RouterViewConfig`; default enabled, sglang-router's trim
            settings): :meth:`prefix_match` and the in-pool choice read the router's approximate trees, fed
            only by what was routed, as the serving router does; hit accounting stays on the engines' caches.

    ``state()`` returns a live view: the same objects are updated in place on each call, so copy what you
    keep. Build from Hydra with ``hydra.utils.instantiate(cfg.cluster)`` or :func:`build_cluster`.
    """

    def __init__(self, pools: Mapping[str, Mapping[str, Any]], cost: Mapping[str, Any] | None = None,
                 hybrid: Any = None, max_retries: int = 4, slo: Mapping[str, float] | None = None,
                 events: Sequence[Mapping[str, Any]] = (), seed: int = 0, rng: np.random.Generator | None = None,
                 log_evictions: bool = False, day_offset: float = 0.0,
                 fault_handling: Mapping[str, Any] | None = None,
                 router_view: Mapping[str, Any] | None = None) -> None:
        if not pools:
            raise ValueError("cluster.pools is empty: configure at least one pool")
        self._rng = rng if rng is not None else np.random.default_rng(seed)
        self._heap: list[tuple[float, int, Any, int]] = []
        self._tick = count()
        self._now = 0.0
        self._out: list[Completion] = []
        self._uid = count()
        self._active = 0
        self._warming = 0  # pipelined warm-ups in flight (not requests: no completion of their own)
        self._epoch = 0
        self._memo: tuple[int, int, dict[str, list[int]]] | None = None
        self._log = log_evictions
        self.max_retries = int(max_retries)
        self.faults = FaultHandling.from_config(fault_handling)
        self.slo_ttft = float(_get(slo, "ttft_s", 2.0))
        self.slo_tpot = float(_get(slo, "tpot_s", 0.1))
        self.day_offset = float(day_offset)
        self.router_view = RouterViewConfig.from_config(router_view)
        self.dclock = DecayClock()
        self.dclock.members.append(self)
        self.r_arr = 0.0  # forward-decayed arrival count
        self.pools: dict[str, SimPool] = {}
        for name, pcfg in pools.items():
            self.pools[name] = SimPool(name, pcfg, self._rng, self._new_instance, self.dclock, self.router_view)
        profiles: dict[str, ServingProfile] = {n: p.profile for n, p in self.pools.items()}
        self.cost_model: CostModel = build_cost_model(cost, profiles)
        self.gpu_clock = GpuSecondsCost(profiles=profiles)  # GPU-seconds of work lost to failures
        self.hybrid = Hybrid.of(hybrid)
        self.submitted = 0
        self._view = StateView(self.pools, self.dclock)
        for ev in events:
            ev = dict(ev)
            if "time" not in ev or "event" not in ev:
                raise ValueError(f"cluster.events entries need 'time' and 'event', got {ev}")
            self.schedule(float(ev.pop("time")), ev.pop("event"), **ev)

    # -- construction helpers ---------------------------------------------------------------------------
    def _new_instance(self, pool: SimPool, index: int) -> Instance:
        return pool.instance_cls(pool.name, index, pool.profile, pool.new_cache(index, self._log), pool.kv_cap,
                                 self._push, self._on_done, self._on_reject, self.dclock, pool.sched,
                                 pool.insert_outputs)

    def rescale(self, f: float) -> None:
        """Decay clock rebase."""
        self.r_arr *= f

    def _push(self, t: float, inst: Instance, ver: int) -> None:
        _heappush(self._heap, (t, next(self._tick), inst, ver))

    # -- Cluster protocol ---------------------------------------------------------------------------------
    @property
    def now(self) -> float:
        """Current cluster time in seconds."""
        return self._now

    def state(self) -> ClusterState:
        """Live view of the cluster (updated in place on each call; copy what you keep)."""
        return self._view.refresh(self._now, self.r_arr, self.day_offset)

    def prefix_match(self, request: Request) -> dict[str, list[int]]:
        """Prompt tokens ``request`` would find cached on each instance, per pool (0 for unhealthy ones): the
        router's estimate (its approximate trees) when ``router_view`` is enabled, else the engines' caches."""
        memo = self._memo
        if memo is not None and memo[0] == request.id and memo[1] == self._epoch:
            return memo[2]
        blocks = request.blocks
        bs = request.block_size
        covered = min(len(blocks) * bs, request.input_len)
        nb = -(-covered // bs) if bs > 0 else 0
        if nb < len(blocks):
            blocks = blocks[:nb]
        now = self._now
        out = {}
        for name, pool in self.pools.items():
            out[name] = pool.match(blocks, bs, covered, now)
        self._memo = (request.id, self._epoch, out)
        return out

    def submit(self, request: Request, action: Action | int) -> None:
        """Route ``request`` with ``action`` at the current time (advancing first if it arrives later).

        Latencies (queue, TTFT, e2e) count from the submit time, which equals ``request.arrival`` when the
        caller advances to each arrival before submitting (as the env and ``run`` do)."""
        if request.input_len < 1:
            raise ValueError(f"request {request.id}: input_len must be >= 1, got {request.input_len}")
        if request.output_len < 1:
            raise ValueError(f"request {request.id}: output_len must be >= 1, got {request.output_len}")
        if request.block_size < 1:
            raise ValueError(f"request {request.id}: block_size must be >= 1, got {request.block_size}")
        if request.arrival > self._now:
            self._run(request.arrival)
        act = _ACTIONS.get(action) if action.__class__ is int or action.__class__ is Action else None
        if act is None:
            act = Action(action)
        stages = action_stages(act, request, self.hybrid)
        for pool, _, _, _ in stages:
            if pool not in self.pools:
                raise ValueError(f"action {act.name.lower()} needs pool {pool!r}, but this cluster has only "
                                 f"{sorted(self.pools)} (check the cluster config or mask the action)")
        now = self._now
        job = Job(request, act, stages, now)
        self._active += 1
        self.submitted += 1
        w = self.dclock.weight(now)  # first: a clock rebase rescales r_arr
        self.r_arr += w
        warm = warmup_stage(act, request, self.hybrid)
        if warm is not None and warm[0] in self.pools:
            self._warm(job, warm, now)
        self._launch(job, now)
        self._epoch += 1

    def advance(self, until: float) -> list[Completion]:
        """Run the simulation to ``until``; return completions (and failures) since the last call."""
        self._run(until)
        out = self._out
        self._out = []
        return out

    # -- beyond the protocol ------------------------------------------------------------------------------
    def next_event_time(self) -> float:
        """Cluster time of the next scheduled event (a step boundary or an operator event); inf if none."""
        return self._heap[0][0] if self._heap else math.inf

    @property
    def in_flight(self) -> int:
        """Submitted requests without a completion yet."""
        return self._active

    def drain(self, max_time: float = math.inf) -> list[Completion]:
        """Run until every in-flight request has completed; requests that can never finish (a pool paused
        with nothing scheduled to resume it) fail with a reason. Returns the completions since the last
        ``advance``."""
        heap = self._heap
        while (self._active or self._warming) and heap and heap[0][0] <= max_time:
            self._run(heap[0][0])
        if self._active or self._warming:
            reason = "unfinished at drain: no event left that could finish it (pool paused or down)"
            for pool in self.pools.values():
                for inst in pool.instances:
                    for s in inst.evacuate():
                        self._fail(s.job, reason, self._now)
        return self.advance(self._now)

    # -- engine ---------------------------------------------------------------------------------------------
    def _run(self, until: float) -> None:
        heap = self._heap
        pop = _heappop
        n = 0
        while heap and heap[0][0] <= until:
            t, _, obj, ver = pop(heap)
            self._now = t
            n += 1
            if ver < 0:
                obj()
            elif obj.ver == ver:
                obj.boundary(t)
        if n:
            self._epoch += 1
        if until > self._now:
            self._now = until

    def _new_seq(self, job: Job) -> Seq:
        """A fresh placement of the job's current stage (first attempt or a re-send)."""
        _, prompt, output, max_new = job.stages[job.stage]
        req = job.req
        return Seq(job, prompt, output, req.blocks, req.block_size, next(self._uid), max_new)

    def _warm(self, job: Job, stage: Stage, t: float) -> None:
        """Start the pipelined hybrid's warm-up of ``job`` (a job of its own) and pin its instance for the answer."""
        w = Job(job.req, job.action, [stage], t)
        w.warms = job
        self._warming += 1
        job.pin = self._dispatch(self.pools[stage[0]], self._new_seq(w), t)

    def _launch(self, job: Job, t: float) -> None:
        pool = self.pools[job.stages[job.stage][0]]
        seq = self._new_seq(job)
        pin = job.pin
        if pin is not None:
            # the warmed instance, while the router may still send to it (only a small-pool stage finds it)
            inst = next((i for i in pool.candidates() if i is pin), None)
            if inst is not None:
                job.pin = None
                self._place(pool, inst, seq, t)
                return
        self._dispatch(pool, seq, t)

    def _dispatch(self, pool: SimPool, seq: Seq, t: float) -> Instance | None:
        """Place ``seq`` with the pool's in-pool policy; returns the instance (None: failed, no candidate)."""
        cands = pool.candidates()
        if not cands:
            self._fail(seq.job, f"no healthy instance in pool {pool.name!r}", t)
            return None
        if len(cands) == 1:
            inst = cands[0]
        else:
            policy = pool.policy
            loads = [i.nload for i in cands]
            if policy.needs_match:
                memo = self._memo
                req = seq.job.req
                if memo is not None and memo[0] == req.id and memo[1] == self._epoch:
                    full = memo[2][pool.name]
                else:
                    full = pool.match(seq.blocks, seq.bs, seq.covered, t)
                view = pool.view
                routed = pool.routed_new if view is None else view.tokens
                if len(cands) == len(pool.instances):  # all of them, in order (an instance's index is its position)
                    matched, sizes = full[:], routed[:]
                else:
                    matched = [full[i.index] for i in cands]
                    sizes = [routed[i.index] for i in cands]
                inst = cands[policy.choose(loads, matched, sizes, seq.prompt)]
                if view is None:
                    routed[inst.index] += seq.prompt - full[inst.index]
            else:
                inst = cands[policy.choose(loads, None, None, seq.prompt)]
        self._place(pool, inst, seq, t)
        return inst

    def _place(self, pool: SimPool, inst: Instance, seq: Seq, t: float) -> None:
        if pool.view is not None:  # the router records what it sent, whichever way it chose
            pool.view.insert(inst.index, seq.blocks, seq.bs, t, seq.prompt)
        if not inst.healthy:  # down, but the router has not noticed yet
            self.hit_dead(inst, seq, t)
            return
        inst.enqueue(seq, t)

    def _on_done(self, inst: Instance, s: Seq, t: float) -> None:
        job = s.job
        pool = self.pools[inst.pool]
        cost = self.cost_model.request_cost(inst.pool, s.prompt, s.cached, s.output)
        inst.cost += cost
        ttft = s.t_first - s.t_enq
        tpot = (t - s.t_first) / (s.output - 1) if s.output > 1 else 0.0
        e2e = t - s.t_enq
        inst.recent_ttft += EWMA * (ttft - inst.recent_ttft)
        inst.recent_tpot += EWMA * (tpot - inst.recent_tpot)
        inst.recent_e2e += EWMA * (e2e - inst.recent_e2e)
        w = self.dclock.weight(t)  # first: a clock rebase rescales r_out
        inst.r_out += s.output * w
        pool.record(t, ttft, tpot, e2e, s.output, cost, ttft > self.slo_ttft or tpot > self.slo_tpot)
        job.cost += cost
        if job.warms is not None:  # a warm-up: billed to the job it warms, no completion of its own
            self._drop_warm(job)
            if inst.retired and not inst.load:
                pool.prune()
            return
        job.prompt += s.prompt
        job.cached += s.cached
        job.out += s.output
        job.queue += s.t_admit - s.t_enq
        job.pools.append(inst.pool)
        job.insts.append(inst.index)
        job.stage += 1
        if inst.retired and not inst.load:
            pool.prune()
        if job.stage < len(job.stages):
            self._launch(job, t)
            return
        self._active -= 1
        req = job.req
        q = req.quality
        self._out.append(Completion(
            request_id=req.id, action=job.action, arrival=req.arrival, finish=t, queue_time=job.queue,
            ttft=s.t_first - job.t0, tpot=tpot, e2e=t - job.t0, prompt_tokens=job.prompt,
            cached_tokens=job.cached, output_tokens=job.out, cost=job.cost,
            quality_ok=q.ok[int(job.action)] if q is not None else None, pools=tuple(job.pools),
            instances=tuple(job.insts), retries=job.retries))

    def _on_reject(self, inst: Instance, s: Seq, reason: str, t: float) -> None:
        self._fail(s.job, reason, t)

    def _retry(self, s: Seq, reason: str, t: float) -> None:
        """Re-send at once (``detection: instant``); a lost warm-up is dropped."""
        job = s.job
        if job.warms is not None:
            self._drop_warm(job)
            return
        job.retries += 1
        if job.retries > self.max_retries:
            self._fail(job, f"{reason}; gave up after {self.max_retries} retries", t)
            return
        self._dispatch(self.pools[job.stages[job.stage][0]], self._new_seq(job), t)

    def _drop_warm(self, job: Job) -> None:
        """A warm-up ends (done, lost or refused): its cost moves to the job it warms; nothing else is owed."""
        job.warms.cost += job.cost  # type: ignore[union-attr]
        job.cost = 0.0
        self._warming -= 1

    def _fail(self, job: Job, reason: str, t: float) -> None:
        if job.warms is not None:
            self._drop_warm(job)
            return
        self._active -= 1
        req = job.req
        q = req.quality
        self._out.append(Completion(
            request_id=req.id, action=job.action, arrival=req.arrival, finish=t, queue_time=job.queue,
            ttft=0.0, tpot=0.0, e2e=t - job.t0, prompt_tokens=job.prompt, cached_tokens=job.cached,
            output_tokens=job.out, cost=job.cost, quality_ok=q.ok[int(job.action)] if q is not None else None,
            pools=tuple(job.pools), instances=tuple(job.insts), failed=True, fail_reason=reason,
            retries=job.retries))

    def schedule(self, time: float, event: str | Callable[[], Any], *args: Any, **kwargs: Any) -> None:
        """Run ``event`` at cluster ``time``: a name from :data:`rlroute.cluster.sim.events.EVENTS`
        (``fail_instance``, ``recover_instance``, ``pause``, ``resume``, ``flush_cache``,
        ``update_weights``, ``scale``) with its arguments, or a zero-argument callable."""
        if isinstance(event, str):
            # A partial of a bound method, not a closure: the event heap stays copyable (sim.fork).
            call: Callable[[], Any] = partial(self.event(event), *args, **kwargs)
        elif callable(event):
            call = event
        else:
            raise TypeError(f"schedule: event must be an event name or a callable, got {event!r}")
        if time < self._now:
            raise ValueError(f"schedule: time {time} is in the past (now {self._now})")
        heapq.heappush(self._heap, (float(time), next(self._tick), call, -1))


__all__ = ["SimCluster", "load_profile"]
