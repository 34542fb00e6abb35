"""One simulated serving instance: the parts every scheduler shares (see :mod:`scheduler` for the options).

An instance is event driven, never stepped one token at a time. Its scheduler subclass
(:class:`rlroute.cluster.sim.sglang_instance.SGLangInstance`, the default, or
:class:`rlroute.cluster.sim.legacy_instance.LegacyInstance`) plans the next *segment* — one prefill step,
or a *decode run* covering every decode step up to the next event that could change the batch — and pushes
its end time on the cluster's heap. Both share the step-time model of the profile:
``a + b*prefill_tokens + c*decode_seqs + d*context_tokens`` plus, with an extended block
(``rlroute.cluster.profiles``), ``e*experts_touched(P + D)`` (MoE) and the prefill chunk's attention pairs
``f*Q + g*S``. In a decode run the batch is constant and the context grows by ``n`` tokens per step, so K
steps take ``K*(a + c*n + d*C) + d*n*K*(K-1)/2`` seconds (an arithmetic series), skipped in O(1); a run is
cut at a real step boundary when something must be looked at earlier (:meth:`Instance.interrupt`).

Decoding sequences sit in a heap keyed by the decode step at which they finish, and the batch's total
context is ``ctx_base + n*step`` (``ctx_base`` sums each sequence's context minus its join step), so a
boundary costs O(log n) per finishing sequence, not O(n).

KV (tokens): prompt blocks live in the prefix cache (shared, pinned while used); what is not in blocks is
the request's private KV (``Seq.private``, plus what a scheduler adds while it decodes). When a request
finishes, its output is inserted into the cache (SGLang ``RadixCache.cache_finished_req``, ``mem_cache/
radix_cache.py``) when the request knows the chained ids its next turn's prompt will carry for the output
(``Request.output_blocks``), so the next turn of a session matches its own previous answer. Only whole
blocks are inserted (SGLang inserts page-aligned tokens); ``cache.insert_outputs: false`` turns it off.
A prompt's new blocks enter the cache at admission rather than chunk by chunk as SGLang inserts them, so
a request sharing the prefix that arrives during that prefill already matches it (a small optimism).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from rlroute.cluster.base import TAU
from rlroute.cluster.profiles import ServingProfile
from rlroute.cluster.sim.job import Seq
from rlroute.cluster.sim.prefix_cache import PrefixCache
from rlroute.cluster.sim.scheduler import SchedulerConfig

IDLE, PREFILL, DECODE = 0, 1, 2
RENORM_S = 3600.0  # rebase the decay clock this often (exp(60) is far from float overflow)


class DecayClock:
    """Forward exponential decay shared by a cluster: a quantity x added at time t is stored as
    ``x * exp((t - ref) / TAU)`` and read at ``now`` by one multiplication with ``exp(-(now - ref) / TAU)``,
    so reading the recent rates of every instance costs one ``exp`` in total instead of one per instance.
    ``members`` (objects with ``rescale(f)``) are rebased when ``t - ref`` exceeds :data:`RENORM_S`."""

    __slots__ = ("_f", "_t", "members", "ref")

    def __init__(self) -> None:
        self.ref = 0.0
        self.members: list[Any] = []
        self._t = -1.0
        self._f = 1.0

    def weight(self, t: float) -> float:
        """Multiplier for a quantity added at time ``t``."""
        if t == self._t:
            return self._f
        if t - self.ref > RENORM_S:
            self.rebase(t)
        self._t = t
        self._f = math.exp((t - self.ref) / TAU)
        return self._f

    def factor(self, now: float) -> float:
        """Multiplier turning stored sums into decayed values at ``now``."""
        if now - self.ref > RENORM_S:
            self.rebase(now)
        return math.exp(-(now - self.ref) / TAU)

    def rebase(self, t: float) -> None:
        """Move the reference time to ``t``, rescaling every member's stored sums."""
        f = math.exp(-(t - self.ref) / TAU)
        for m in self.members:
            m.rescale(f)
        self.ref = t
        self._t = -1.0


class Instance:
    """A serving instance (shared part). ``push(time, instance, version)`` schedules its next boundary in
    the cluster's event heap; ``done(instance, seq, time)`` and ``reject(instance, seq, reason, time)``
    report back. Subclasses implement :meth:`boundary` and :meth:`_schedule`."""

    __slots__ = ("a", "b", "c", "cache", "e_tot", "f", "g", "q", "chunk", "clock", "ctx_base", "d", "dec", "done",
                 "healthy", "index", "insert_outputs", "kv_cap", "max_running", "paused", "pool", "prefill",
                 "private", "profile", "push", "r_evict", "r_hit", "r_out", "dclock", "r_tok", "recent_e2e",
                 "recent_tpot", "recent_ttft", "reject", "retired", "sched", "seg", "seg_base", "seg_chunk",
                 "seg_h", "seg_steps", "seg_t0", "step", "ver", "waiting", "cost", "busy_time", "completed",
                 "evicted_seen", "nload")

    def __init__(self, pool: str, index: int, profile: ServingProfile, cache: PrefixCache, kv_cap: int,
                 push: Callable[[float, Instance, int], None], done: Callable[[Instance, Seq, float], None],
                 reject: Callable[[Instance, Seq, str, float], None], dclock: DecayClock | None = None,
                 sched: SchedulerConfig | None = None, insert_outputs: bool = True) -> None:
        self.pool = pool
        self.index = index
        self.profile = profile
        self.sched = sched if sched is not None else SchedulerConfig()
        self.insert_outputs = insert_outputs
        ext = profile.ext  # a step adds e_tot*(1 - q**tokens) (= e*experts touched) + f*Q + g*S; None: 4-term
        x = ext or profile
        self.a, self.b, self.c, self.d = x.a, x.b, x.c, x.d
        self.f, self.g = (ext.f, ext.g) if ext else (0.0, 0.0)
        self.e_tot, self.q = (ext.e * ext.num_experts, 1.0 - ext.top_k / ext.num_experts) if ext and ext.num_experts \
            else (0.0, 1.0)
        self.chunk = self.sched.chunk_size(profile.gpu_memory_gb, profile.chunked_prefill_tokens)
        self.max_running = profile.max_running_requests
        self.kv_cap = kv_cap
        self.cache = cache
        self.push, self.done, self.reject = push, done, reject
        self.waiting: deque[Seq] = deque()
        self.prefill: deque[Seq] = deque()
        self.dec: list[tuple[int, int, Seq]] = []
        self.ctx_base = 0
        self.step = 0
        self.clock = 0.0
        self.seg = IDLE
        self.seg_steps = self.seg_chunk = 0
        self.seg_t0 = self.seg_base = self.seg_h = 0.0
        self.ver = 0
        self.private = 0
        self.healthy = True
        self.paused = False
        self.retired = False
        self.recent_ttft = self.recent_tpot = self.recent_e2e = 0.0
        self.r_out = self.r_hit = self.r_tok = self.r_evict = 0.0  # forward-decayed sums (see DecayClock)
        self.dclock = dclock if dclock is not None else DecayClock()
        self.dclock.members.append(self)
        self.evicted_seen = 0
        self.cost = 0.0
        self.busy_time = 0.0
        self.completed = 0
        self.nload = 0  # queued + running, kept as a counter: routers read it for every decision

    # -- load figures -------------------------------------------------------------------------------------
    @property
    def running(self) -> int:
        return self.nload - len(self.waiting)

    @property
    def load(self) -> int:
        """Requests on the instance (queued + running): what the SGLang router balances on."""
        return self.nload

    @property
    def kv_used(self) -> int:
        return self.cache.total_tokens + self.private

    # -- entry points ---------------------------------------------------------------------------------------
    def enqueue(self, seq: Seq, now: float) -> None:
        """Queue a request; an idle instance starts at once, a decode run is cut when the scheduler would
        look at the new request at the next step (:meth:`_wants_interrupt`)."""
        seq.t_enq = now
        self.waiting.append(seq)
        self.nload += 1
        if self.paused or not self.healthy:
            return
        if self.seg == IDLE:
            self.clock = now
            self._schedule(now)
        elif self.seg == DECODE and self._wants_interrupt():
            self.interrupt(now)

    def _wants_interrupt(self) -> bool:
        raise NotImplementedError

    def boundary(self, t: float) -> None:
        """Event handler: the current segment (prefill step or decode run) ended at ``t``."""
        raise NotImplementedError

    def _schedule(self, t: float) -> None:
        raise NotImplementedError

    def interrupt(self, now: float) -> None:
        """Shorten the current decode run to end at the first step boundary at or after ``now``."""
        if self.seg != DECODE:
            return
        elapsed = now - self.seg_t0
        base, h, steps = self.seg_base, self.seg_h, self.seg_steps
        if elapsed <= 0.0:
            k = 1
        elif h > 0.0:
            bb = base - 0.5 * h
            k = max(1, math.ceil((-bb + math.sqrt(bb * bb + 2.0 * h * elapsed)) / h))
            while k > 1 and (k - 1) * base + h * (k - 1) * (k - 2) * 0.5 >= elapsed:
                k -= 1
            while k * base + h * k * (k - 1) * 0.5 < elapsed:
                k += 1
        else:
            k = max(1, math.ceil(elapsed / base))
        if k >= steps:
            return
        self.seg_steps = k
        self.ver += 1
        self.push(self.seg_t0 + k * base + h * k * (k - 1) * 0.5, self, self.ver)

    def _run_steps_by(self, now: float) -> int:
        """Steps of the current decode run completed by ``now`` (0 outside a run)."""
        if self.seg != DECODE:
            return 0
        elapsed = now - self.seg_t0
        base, h = self.seg_base, self.seg_h
        if elapsed <= 0.0:
            return 0
        if h > 0.0:
            bb = base - 0.5 * h
            k = int((-bb + math.sqrt(bb * bb + 2.0 * h * elapsed)) / h)
            while k > 0 and k * base + h * k * (k - 1) * 0.5 > elapsed:
                k -= 1
            while (k + 1) * base + h * (k + 1) * k * 0.5 <= elapsed:
                k += 1
        else:
            k = int(elapsed / base)
        return min(k, self.seg_steps)

    def next_step_end(self, now: float) -> float:
        """End of the decode step in progress at ``now`` (``inf`` outside a decode run): when the next tokens
        appear, for a live engine that streams them."""
        if self.seg != DECODE:
            return math.inf
        k = self._run_steps_by(now) + 1
        return self.seg_t0 + k * self.seg_base + self.seg_h * k * (k - 1) * 0.5

    def generated(self, s: Seq, now: float) -> int:
        """Tokens ``s`` (in the running batch) has generated by ``now`` (streaming; subclasses)."""
        raise NotImplementedError

    def abort(self, s: Seq, now: float) -> None:
        """Drop a request whose client went away (SGLang aborts it at the next scheduling step): a queued one
        leaves the queue, a decoding one the batch (its KV freed, the decode run cut at ``now``), one still
        in prefill finishes as soon as its prefill does."""
        if s in self.waiting:
            self.waiting.remove(s)
            self.nload -= 1
        elif s in self.prefill:
            s.output = s.gen + 1
        elif any(e[2] is s for e in self.dec):
            self.dec = [e for e in self.dec if e[2] is not s]
            heapq.heapify(self.dec)
            self._drop_decoding(s)
            self.cache.release(s.pinned, now)
            s.pinned = []
            self.private -= s.private
            self.nload -= 1
            self.interrupt(now)

    def _drop_decoding(self, s: Seq) -> None:
        """Take an aborted ``s`` (already out of ``dec``) out of the running batch's sums (subclasses)."""
        raise NotImplementedError

    def _decode_run(self, t: float, k: int) -> None:
        """Plan ``k`` decode steps of the current batch from ``t`` (one event at their end)."""
        n = len(self.dec)
        base = self.a + self.c * n + self.d * (self.ctx_base + n * self.step)
        if self.e_tot:  # same n tokens every step of the run: a constant per step
            base += self.e_tot * (1.0 - self.q ** n)
        h = self.d * n
        self.seg = DECODE
        self.seg_steps = k
        self.seg_t0 = t
        self.seg_base = base
        self.seg_h = h
        self.ver += 1
        self.push(t + k * base + h * k * (k - 1) * 0.5, self, self.ver)

    def resume(self, now: float) -> None:
        """Continue generation after a pause."""
        self.paused = False
        if self.healthy and self.seg == IDLE:
            self.clock = now
            self._schedule(now)

    def retract_all(self, t: float) -> int:
        """Pause in SGLang's ``retract`` mode: the running batch back to the queue (scheduler-specific)."""
        raise NotImplementedError(f"{type(self).__name__} has no retract mode (use the sglang scheduler)")

    def evacuate(self) -> list[Seq]:
        """Failure: stop at once, lose the KV pool and the cache, hand back every request held."""
        seqs = list(self.waiting) + list(self.prefill) + [e[2] for e in self.dec]
        self.waiting.clear()
        self.prefill.clear()
        self.dec.clear()
        self.ctx_base = 0
        self.private = 0
        self.nload = 0
        self.seg = IDLE
        self.ver += 1
        self._reset_batch()
        self.cache.clear()
        return seqs

    def _reset_batch(self) -> None:
        """Scheduler state to forget on a failure (subclasses)."""

    # -- internals -------------------------------------------------------------------------------------------
    def _finish(self, s: Seq, t: float) -> None:
        cache = self.cache
        cache.release(s.pinned, t)
        s.pinned = []
        self.private -= s.private
        if self.insert_outputs:
            req = s.job.req
            ob = req.output_blocks
            if ob and s.prompt == req.input_len and s.output == req.output_len and s.bs == req.block_size:
                nfull = req.input_len // s.bs
                if cache.insert(req.blocks[:nfull] + ob, s.bs, t, nfull):
                    over = cache.total_tokens + self.private - self.kv_cap
                    if over > 0:
                        cache.make_room(over)
        self.nload -= 1
        self.completed += 1
        self.done(self, s, t)

    def _reject_too_long(self, s: Seq, t: float, need: int = 0) -> bool:
        """Reject a request that can never fit the KV pool: prompt + output, or ``need`` tokens (what the
        scheduler must reserve to admit it; SGLang would leave it waiting forever); True if rejected."""
        need = max(need, s.prompt + s.output)
        if need <= self.kv_cap:
            return False
        self.nload -= 1
        self.reject(self, s, f"request needs {need} KV tokens (prompt {s.prompt}, output {s.output}, max_new "
                             f"{s.max_new}), more than the KV pool ({self.kv_cap} tokens) of {self.pool}[{self.index}]", t)
        return True

    def _count_admission(self, s: Seq, m: int, t: float) -> None:
        """Cache statistics of a first admission (``m`` blocks matched, ``s.cached`` tokens)."""
        cache = self.cache
        cached = s.cached
        cache.hit_tokens += cached
        cache.miss_tokens += s.prompt - cached
        cache.hit_blocks += m
        cache.miss_blocks += s.nblocks - m
        w = self.dclock.weight(t)
        self.r_hit += cached * w
        self.r_tok += s.prompt * w

    def _prefill_time(self, chunk: int, att: float, n: int) -> float:
        """Seconds of one step computing ``chunk`` prompt tokens (``att``: their attention-pair term) while
        ``n`` sequences decode."""
        dt = self.a + self.b * chunk + att
        if n:
            dt += self.c * n + self.d * (self.ctx_base + n * self.step)
        if self.e_tot:
            dt += self.e_tot * (1.0 - self.q ** (chunk + n))
        return dt

    def rescale(self, f: float) -> None:
        """Decay clock rebase."""
        self.r_out *= f
        self.r_hit *= f
        self.r_tok *= f
        self.r_evict *= f

    def note_evictions(self, now: float) -> None:
        """Fold evictions counted by the cache since the last call into the recent eviction rate."""
        ev = self.cache.evicted_tokens
        if ev != self.evicted_seen:
            w = self.dclock.weight(now)  # first: a clock rebase rescales r_evict
            self.r_evict += (ev - self.evicted_seen) * w
            self.evicted_seen = ev

    def stats(self, now: float) -> dict[str, Any]:
        """Recent-window rates at ``now`` (decayed with time constant ``TAU``)."""
        self.note_evictions(now)
        f = self.dclock.factor(now)
        return {
            "throughput": self.r_out * f / TAU,
            "cache_hit_rate": self.r_hit / self.r_tok if self.r_tok > 0 else 0.0,
            "evictions_rate": self.r_evict * f / TAU,
        }
