"""Continuous batching in wall-clock time: the emulated worker's engine.

The engine runs the simulator's instance model (step time from a serving profile, a block prefix cache,
KV capacity) on a virtual clock ``(wall - start) * speedup``. Each loop turn it executes every engine
step whose virtual end time has passed, then sleeps until the next step ends — but at least
``min_tick_s`` of wall time, so a large speed-up batches many steps per wake-up instead of spinning the
CPU; after a host stall the backlog is replayed in full, never skipped. Token events go to each request's
asyncio queue, which the HTTP layer turns into a response or an SSE stream. One step follows SGLang's scheduler in outline: admit waiting requests while KV memory and
``max_running_requests`` allow (prefix-cache hits need no prefill), prefill up to
``chunked_prefill_tokens`` new tokens, decode one token for every running sequence.

Two rules keep it the simulator's instance (``rlroute.cluster.sim.instance``): admission is causal — a
request joins only a step that starts at or after its arrival, even when the loop replays a backlog of
steps that began before it was submitted — and a prefill chunk is priced with its attention pairs per
prompt (``chunk_pairs(take)`` among the chunk's new tokens, ``take * s`` to the ``s`` tokens of the prompt
already in KV: cached prefix and earlier chunks), exactly as the simulator charges them. A request's
arrival is stamped when the HTTP layer receives it (:meth:`Engine.hold`), and no step past a held arrival
is planned until the request is submitted, so parsing and tokenizing — wall time, sped up into modelled
time — neither shortens its TTFT nor reorders it behind later arrivals.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlroute.cluster.profiles import chunk_pairs
from rlroute.worker.model import InstanceModel


class _Clock(Protocol):
    def __call__(self) -> float: ...


@dataclass(slots=True, eq=False)
class Job:
    """One request inside the engine."""

    rid: str
    blocks: tuple[int, ...]
    prompt_tokens: int
    max_new_tokens: int
    arrival: float  # virtual seconds
    events: asyncio.Queue[tuple[str, int]] = field(default_factory=asyncio.Queue)
    cached_tokens: int = 0
    prefill_left: int = 0
    generated: int = 0
    reserved: int = 0  # KV tokens reserved at admission
    pinned: list[Any] = field(default_factory=list)  # prefix-cache blocks pinned while running
    admitted: bool = False
    first_token: float | None = None
    finish: float | None = None
    aborted: bool = False


@dataclass(slots=True)
class EngineStats:
    """Counters the worker's /metrics and /get_load report."""

    requests_total: int = 0
    prompt_tokens_total: int = 0
    cached_tokens_total: int = 0
    generation_tokens_total: int = 0
    steps_total: int = 0
    recent_gen_throughput: float = 0.0  # tokens per virtual second, exponentially weighted


class Engine:
    """Continuous-batching engine over an :class:`InstanceModel` on a sped-up wall clock.

    Args:
        model: step-time model, KV capacity and prefix cache of one instance.
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
        self._vnow = 0.0  # virtual time the engine has simulated up to
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []
        self.paused = False
        self.stats = EngineStats()
        self._wake = asyncio.Event()
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._holds: dict[int, float] = {}  # received, not yet submitted requests -> their arrival
        self._hold_ids = itertools.count()

    # -- time -------------------------------------------------------------------------------------------
    def virtual_now(self) -> float:
        """Virtual seconds since the engine started."""
        return (self._clock() - self._start) * self.speedup

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

        Until :meth:`submit` (or :meth:`release`) the engine plans no step starting at or after that
        arrival, so the wall time spent parsing and counting tokens — sped up ``speedup`` times it would
        be modelled seconds no real server spends — neither shortens the request's modelled TTFT nor lets
        a shorter request received later overtake it.
        """
        hid = next(self._hold_ids)
        self._holds[hid] = self.virtual_now()
        return hid

    def release(self, hold: int | None) -> None:
        """Drop a hold whose request will not be submitted (error, injected fault); idempotent."""
        if hold is not None and self._holds.pop(hold, None) is not None:
            self._wake.set()

    def submit(self, blocks: tuple[int, ...], prompt_tokens: int, max_new_tokens: int, hold: int | None = None) -> Job:
        """Queue a request; its events (``("token", i)`` then ``("done", n)``) arrive on ``job.events``.

        Args:
            blocks: chained block ids of the prompt.
            prompt_tokens: prompt length in tokens.
            max_new_tokens: tokens to generate.
            hold: the request's :meth:`hold` (its arrival time; released here); ``None``: arrives now.
        """
        arrival = self._holds.pop(hold, None) if hold is not None else None
        job = Job(
            rid=f"{next(self._ids):x}",
            blocks=blocks,
            prompt_tokens=max(1, prompt_tokens),
            max_new_tokens=max_new_tokens,
            arrival=self.virtual_now() if arrival is None else arrival,
        )
        # FIFO by arrival: a request held while parsing goes before later arrivals submitted meanwhile.
        i = len(self.waiting)
        while i > 0 and self.waiting[i - 1].arrival > job.arrival:
            i -= 1
        self.waiting.insert(i, job)
        self.stats.requests_total += 1
        self._wake.set()
        return job

    def abort(self, job: Job) -> None:
        """Drop a request whose client went away; frees its KV and cache references."""
        job.aborted = True
        if job in self.waiting:
            self.waiting.remove(job)
        elif job in self.running:
            self.running.remove(job)
            self.model.release(job.pinned, job.reserved, self._vnow)

    def pause(self) -> None:
        """Stop stepping; queued and running requests are held in place (SGLang ``in_place`` mode)."""
        self.paused = True

    def resume(self) -> None:
        """Resume stepping after :meth:`pause`."""
        self.paused = False
        self._wake.set()

    # -- load -------------------------------------------------------------------------------------------
    @property
    def kv_used_tokens(self) -> int:
        """Tokens held in KV memory by running requests plus cached prefix blocks."""
        return self.model.kv_used_tokens

    # -- stepping ---------------------------------------------------------------------------------------
    def _admit(self) -> None:
        limit = self.model.max_running_requests
        while self.waiting and len(self.running) < limit:
            job = self.waiting[0]
            if job.arrival > self._vnow:
                # Causal admission, as the simulator's instance: a request joins only a step that starts
                # at or after its arrival (the loop may replay steps that began before it was submitted).
                break
            got = self.model.admit(job.blocks, job.prompt_tokens, job.max_new_tokens, self._vnow)
            if got is None:
                break  # head-of-line blocking, as SGLang's FCFS scheduler does when memory is short
            self.waiting.popleft()
            job.pinned, matched, job.reserved = got
            job.cached_tokens = min(matched, job.prompt_tokens - 1)  # SGLang always computes >= 1 token
            job.prefill_left = job.prompt_tokens - job.cached_tokens
            job.admitted = True
            self.stats.prompt_tokens_total += job.prompt_tokens
            self.stats.cached_tokens_total += job.cached_tokens
            self.running.append(job)

    def _step(self) -> float:
        """Plan one engine step; returns its duration in virtual seconds and applies its effects."""
        if not self.running and self.waiting:
            self._vnow = max(self._vnow, self.waiting[0].arrival)  # an idle engine starts on arrival
        self._admit()
        budget = self.model.chunked_prefill_tokens
        prefill = 0
        pairs = 0.0  # causal attention among each prompt's new tokens (Q of the profile's step model)
        prefix_pairs = 0.0  # new tokens x the prompt's tokens already in KV: cached prefix + earlier chunks (S)
        decoding = [j for j in self.running if j.prefill_left == 0]
        for job in self.running:
            if job.prefill_left and budget > 0:
                take = min(job.prefill_left, budget)
                pairs += chunk_pairs(take)
                prefix_pairs += take * (job.prompt_tokens - job.prefill_left)
                job.prefill_left -= take
                budget -= take
                prefill += take
        context = sum(j.prompt_tokens + j.generated for j in decoding)
        dt = self.model.step_time(prefill, len(decoding), context, pairs, prefix_pairs)
        end = self._vnow + dt
        # A request whose prefill completed this step emits its first token at the step's end.
        finished: list[Job] = []
        for job in self.running:
            if job.prefill_left:
                continue
            if job.generated < job.max_new_tokens:
                job.generated += 1
                if job.first_token is None:
                    job.first_token = end
                job.events.put_nowait(("token", job.generated))
            if job.generated >= job.max_new_tokens:
                finished.append(job)
        emitted = sum(1 for j in self.running if j.prefill_left == 0)
        self.stats.generation_tokens_total += emitted
        self.stats.steps_total += 1
        if dt > 0:
            rate = emitted / dt
            self.stats.recent_gen_throughput += 0.05 * (rate - self.stats.recent_gen_throughput)
        for job in finished:
            self.running.remove(job)
            job.finish = end
            self.model.release(job.pinned, job.reserved, end)
            job.events.put_nowait(("done", job.generated))
        self._vnow = end
        return dt

    async def _loop(self) -> None:
        while True:
            if self.paused or not (self.waiting or self.running):
                self._wake.clear()
                await self._wake.wait()
                continue  # the next step starts at the new request's arrival (see _step), not at wake-up
            now = self.virtual_now()
            # After a stall of the host the whole backlog is replayed (steps cost microseconds of CPU):
            # skipping virtual time would make the modelled latencies shorter than the instance model's.
            # A held request (received, still parsing) could join a step starting at or after its arrival:
            # no such step is planned before it is submitted.
            frontier = min(self._holds.values(), default=math.inf)
            while (self.waiting or self.running) and not self.paused and self._vnow <= now:
                if (self._vnow if self.running else self.waiting[0].arrival) >= frontier:
                    break
                self._step()
            wait = max((self._vnow - self.virtual_now()) / self.speedup, self.min_tick_s)
            await asyncio.sleep(wait)
