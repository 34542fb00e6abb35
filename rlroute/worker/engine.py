"""The emulated worker's engine: the simulator's instance run on a sped-up wall clock.

The engine owns one :class:`rlroute.cluster.sim.instance.Instance` (SGLang's scheduler by default,
:mod:`rlroute.worker.model`) and a private event heap, and replays it exactly as :class:`SimCluster` does
— the same objects and code, so the emulated worker and the simulator follow one instance model: prefill
and decode steps, admission, ``retract_decode``, the prefix cache. Time is virtual:
``(wall - start) * speedup``. Each loop turn processes, in time order, every instance event and every
submitted arrival up to the virtual now (an arrival at the same time as an event goes after it, as
``SimCluster.advance`` then ``submit``), streams the tokens generated so far, then sleeps until the next
decode step ends or the next event is due — at least ``min_tick_s`` of wall time, so a large speed-up
batches many steps per wake-up instead of spinning the CPU; after a host stall the backlog is replayed in
full, never skipped.

Arrivals are causal: a request's arrival is stamped when the HTTP layer receives it (:meth:`Engine.hold`),
and nothing at or after a held arrival is processed until the request is submitted (or released), so
parsing and tokenizing — wall time, sped up into modelled time — neither shortens its TTFT nor lets a later
arrival overtake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from rlroute.cluster.sim.instance import IDLE, Instance
from rlroute.cluster.sim.job import Seq
from rlroute.types import Request
from rlroute.worker.model import InstanceModel

PAUSE_MODES = ("abort", "retract", "in_place")  # SGLang's PauseGenerationReqInput.mode (default "abort")


class _Clock(Protocol):
    def __call__(self) -> float: ...


@dataclass(slots=True, eq=False)
class Job:
    """One request inside the engine (``req`` is what the instance model reads of it)."""

    rid: str
    req: Request
    prompt_tokens: int
    max_new_tokens: int
    arrival: float  # virtual seconds
    events: asyncio.Queue[tuple[str, int]] = field(default_factory=asyncio.Queue)
    seq: Seq | None = None
    cached_tokens: int = 0
    generated: int = 0
    first_token: float | None = None
    finish: float | None = None
    aborted: bool = False
    abort_message: str | None = None  # ended by pause_generation(mode=abort)


@dataclass(slots=True)
class EngineStats:
    """Counters the worker's /metrics and /get_load report."""

    requests_total: int = 0
    prompt_tokens_total: int = 0
    cached_tokens_total: int = 0
    generation_tokens_total: int = 0
    recent_gen_throughput: float = 0.0  # tokens per virtual second, exponentially weighted


class Engine:
    """The instance model on a sped-up wall clock (module doc).

    Args:
        model: profile, KV capacity, scheduler options and prefix cache of one instance.
        speedup: virtual seconds per wall second (1 = real time).
        min_tick_s: shortest wall sleep between engine wake-ups.
        clock: wall clock (monotonic seconds); injectable for tests.
    """

    def __init__(
        self, model: InstanceModel, speedup: float = 1.0, min_tick_s: float = 0.001, clock: _Clock = time.monotonic
    ) -> None:
        if speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        self.model = model
        self.speedup = float(speedup)
        self.min_tick_s = float(min_tick_s)
        self._clock = clock
        self._start = clock()
        self._vnow = 0.0  # virtual time the instance has been simulated up to
        self._heap: list[tuple[float, int, int]] = []  # (virtual time, tie-break, instance version)
        self._ticks = itertools.count()
        self.inst: Instance = model.new_instance(self._push, self._done, self._reject)
        self._pending: list[Job] = []  # submitted, not yet handed to the instance, by arrival
        self.stats = EngineStats()
        self._wake = asyncio.Event()
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._holds: dict[int, float] = {}  # received, not yet submitted requests -> their arrival
        self._hold_ids = itertools.count()
        self._t_rate = 0.0  # virtual time of the last throughput update

    # -- the instance's callbacks -------------------------------------------------------------------------
    def _push(self, t: float, inst: Instance, ver: int) -> None:
        heapq.heappush(self._heap, (t, next(self._ticks), ver))

    def _done(self, inst: Instance, s: Seq, t: float) -> None:
        job: Job = s.job  # type: ignore[assignment]
        job.finish = t
        job.first_token = s.t_first
        job.cached_tokens = s.cached
        self._emit(job, s.output)
        job.events.put_nowait(("done", job.generated))

    def _reject(self, inst: Instance, s: Seq, reason: str, t: float) -> None:
        job: Job = s.job  # type: ignore[assignment]
        job.finish = t
        job.events.put_nowait(("done", job.generated))

    def _emit(self, job: Job, n: int) -> None:
        if n > job.generated and not job.aborted:
            self.stats.generation_tokens_total += n - job.generated
            job.generated = n
            job.events.put_nowait(("token", n))

    # -- time -------------------------------------------------------------------------------------------
    def virtual_now(self) -> float:
        """Virtual seconds since the engine started."""
        return (self._clock() - self._start) * self.speedup

    def clock_at(self, virtual: float) -> float:
        """The engine clock's reading (``time.monotonic`` by default, shared by every process of the machine)
        at virtual time ``virtual``."""
        return self._start + virtual / self.speedup

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the stepping task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="rlroute-engine")

    async def stop(self) -> None:
        """Cancel the stepping task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- requests ---------------------------------------------------------------------------------------
    def hold(self) -> int:
        """Stamp a request's arrival now, before its body is parsed and tokenized; returns a hold id.

        Until :meth:`submit` (or :meth:`release`) nothing at or after that arrival is processed, so the wall
        time spent parsing and counting tokens — sped up ``speedup`` times it would be modelled seconds no
        real server spends — neither shortens the request's modelled TTFT nor lets a shorter request
        received later overtake it.
        """
        hid = next(self._hold_ids)
        self._holds[hid] = self.virtual_now()
        return hid

    def release(self, hold: int | None) -> None:
        """Drop a hold whose request will not be submitted (error, injected fault); idempotent."""
        if hold is not None and self._holds.pop(hold, None) is not None:
            self._wake.set()

    def submit(self, blocks: tuple[int, ...], prompt_tokens: int, max_new_tokens: int, hold: int | None = None,
               output_tokens: int | None = None, output_blocks: tuple[int, ...] = ()) -> Job:
        """Queue a request; its events (``("token", n)`` with n tokens so far, then ``("done", n)``) arrive on
        ``job.events``.

        Args:
            blocks: chained block ids of the prompt (``model.block_size`` tokens each).
            prompt_tokens: prompt length in tokens.
            max_new_tokens: the client's cap (SGLang's admission reserves from it); 0: prefill only.
            hold: the request's :meth:`hold` (its arrival time; released here); ``None``: arrives now.
            output_tokens: where the reply ends (a real model's EOS), at most the cap; ``None``: the cap.
            output_blocks: the answer's block ids as the next turn will carry them; inserted into the prefix
                cache when the request finishes (``Request.output_blocks``), ``()``: not inserted.
        """
        arrival = self._holds.pop(hold, None) if hold is not None else None
        n_in = max(1, prompt_tokens)
        rid = next(self._ids)
        t = self.virtual_now() if arrival is None else arrival
        # max_new_tokens 0 is SGLang's prefill-only request (``Req.is_prefill_only``, managers/schedule_batch.py):
        # the prompt is computed and cached, nothing is generated (a pipelined hybrid's warm-up)
        cap = max(0, max_new_tokens)
        out = cap if output_tokens is None or cap == 0 else max(1, min(int(output_tokens), cap))
        req = Request(id=rid, arrival=t, input_len=n_in, output_len=out, blocks=blocks,
                      block_size=self.model.block_size, max_new_tokens=cap, output_blocks=tuple(output_blocks))
        job = Job(rid=f"{rid:x}", req=req, prompt_tokens=n_in, max_new_tokens=max_new_tokens, arrival=t)
        job.seq = Seq(job, n_in, req.output_len, blocks, req.block_size, rid, req.max_new_tokens)  # type: ignore[arg-type]
        # by arrival: a request held while parsing goes before later arrivals submitted meanwhile
        i = len(self._pending)
        while i > 0 and self._pending[i - 1].arrival > t:
            i -= 1
        self._pending.insert(i, job)
        self.stats.requests_total += 1
        self._wake.set()
        return job

    def abort(self, job: Job) -> None:
        """Drop a request whose client went away; frees its KV and cache references."""
        job.aborted = True
        if job in self._pending:
            self._pending.remove(job)
        elif job.seq is not None and job.finish is None:
            self.inst.abort(job.seq, self._vnow)

    def pause(self) -> None:
        """Stop at the end of the step in progress; queued and running requests are held in place (SGLang
        ``pause_generation``, ``in_place`` mode)."""
        self.inst.paused = True
        self.inst.interrupt(max(self._vnow, self.virtual_now()))

    async def pause_mode(self, mode: str) -> int:
        """SGLang ``pause_generation`` (``PauseGenerationReqInput``): new requests wait for ``continue`` in
        every mode; ``in_place`` keeps the running batch and its KV where it is; ``retract`` stops at the end of
        the step in progress and sends the running batch back to the queue, KV freed (recomputed after
        ``continue``; the cache can be flushed meanwhile); ``abort`` ends every queued and running request
        now (``finish_reason`` ``abort``). Returns the requests retracted or aborted."""
        if mode not in PAUSE_MODES:
            raise ValueError(f"mode: expected one of {PAUSE_MODES}, got {mode!r}")
        self.pause()
        if mode == "in_place":
            return 0
        if mode == "abort":
            jobs = self.running + self.waiting
            now = max(self._vnow, self.virtual_now())
            for job in jobs:
                self.abort(job)
                job.finish, job.abort_message = now, "Abort all requests (pause_generation mode=abort)"
                job.events.put_nowait(("done", job.generated))
            return len(jobs)
        while self.inst.seg != IDLE:  # the step in progress ends first (the engine loop processes it)
            self._wake.set()
            await asyncio.sleep(self.min_tick_s)
        return self.inst.retract_all(max(self._vnow, self.virtual_now()))

    @property
    def busy(self) -> bool:
        """Requests are in the running batch (SGLang's ``flush_cache`` refuses to run then)."""
        return bool(self.inst.prefill or self.inst.dec)

    def resume(self) -> None:
        """Resume stepping after :meth:`pause`."""
        now = max(self._vnow, self.virtual_now())
        self._advance(now)
        self._vnow = now
        self.inst.resume(now)
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self.inst.paused

    # -- load -------------------------------------------------------------------------------------------
    @property
    def waiting(self) -> list[Job]:
        """Queued requests (in the instance's queue, then those not handed to it yet)."""
        return [s.job for s in self.inst.waiting] + self._pending  # type: ignore[misc, return-value]

    @property
    def running(self) -> list[Job]:
        """Admitted, unfinished requests."""
        return [s.job for s in self.inst.prefill] + [e[2].job for e in self.inst.dec]  # type: ignore[misc, return-value]

    @property
    def kv_used_tokens(self) -> int:
        """Tokens held in KV memory by running requests plus cached prefix blocks."""
        return self.inst.kv_used

    # -- stepping ---------------------------------------------------------------------------------------
    def _next_time(self) -> float:
        """Virtual time of the next event or arrival the engine may process (``inf``: none, or held)."""
        t = min(self._heap[0][0] if self._heap else math.inf, self._pending[0].arrival if self._pending else math.inf)
        return t if t < min(self._holds.values(), default=math.inf) else math.inf

    def _step(self) -> float:
        """Process the next instance event or arrival; returns its virtual time (``inf``: nothing to do)."""
        t = self._next_time()
        if t == math.inf:
            return t
        self._vnow = max(self._vnow, t)
        if self._heap and self._heap[0][0] == t:
            _, _, ver = heapq.heappop(self._heap)
            if ver == self.inst.ver:
                self.inst.boundary(t)
        else:
            job = self._pending.pop(0)
            assert job.seq is not None
            self.inst.enqueue(job.seq, t)
        return t

    def _advance(self, now: float) -> None:
        """Process everything due by ``now``, then stream the tokens generated by then."""
        while self._next_time() <= now:
            self._step()
        horizon = min(now, min(self._holds.values(), default=math.inf))
        inst = self.inst
        st = self.stats
        before = st.generation_tokens_total
        for s in inst.prefill:
            job: Job = s.job  # type: ignore[assignment]
            job.cached_tokens = s.cached
        for e in inst.dec:
            s = e[2]
            job = s.job  # type: ignore[assignment]
            if job.first_token is None:
                job.first_token = s.t_first
                job.cached_tokens = s.cached
            self._emit(job, inst.generated(s, horizon))
        cache = self.model.cache
        st.prompt_tokens_total = cache.hit_tokens + cache.miss_tokens
        st.cached_tokens_total = cache.hit_tokens
        dt = horizon - self._t_rate
        if dt > 0:  # exponential average over ~0.4 modelled seconds (20 steps of ~20 ms: an assumption)
            st.recent_gen_throughput += min(1.0, dt / 0.4) * (
                (st.generation_tokens_total - before) / dt - st.recent_gen_throughput)
            self._t_rate = horizon

    async def _loop(self) -> None:
        while True:
            now = self.virtual_now()
            self._advance(now)
            nxt = min(self._next_time(), self.inst.next_step_end(now))
            self._wake.clear()
            if nxt == math.inf:
                await self._wake.wait()  # idle, paused or held: a submit, release or resume wakes it
                continue
            wait = max((nxt - self.virtual_now()) / self.speedup, self.min_tick_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
