"""One simulated serving instance: continuous batching with chunked prefill and a prefix KV cache.

Engine steps follow the profile's ``a + b*prefill_tokens + c*decode_seqs + d*context_tokens`` plus, with an
extended block (``rlroute.cluster.profiles``), ``e*experts_touched(P + D)`` (MoE) and the prefill chunk's
attention pairs ``f*Q + g*S``. The instance is event driven, never stepped one token at a time:

* a *prefill step* runs while admitted requests still have prompt tokens to compute; it takes up to
  ``chunked_prefill_tokens`` of them (FIFO) and every decoding sequence also gains a token (mixed batch);
* otherwise a *decode run* covers all steps up to the next sequence to finish. The batch is constant
  over the run, and the context grows by ``n`` tokens per step, so K steps take
  ``K*(a + c*n + d*C) + d*n*K*(K-1)/2`` seconds (an arithmetic series) and are skipped in O(1) (the MoE
  term depends only on the step's token count, ``n`` in a run: a constant in ``a + c*n``; no prefill pairs);
* a new request interrupts a decode run at the end of the step in progress (solving the quadratic for
  that step), so it is admitted at a real step boundary.

Decoding sequences sit in a heap keyed by the global step at which they finish, and the batch's total
context is ``ctx_base + n*step`` (``ctx_base`` sums each sequence's context minus its join step), so a
boundary costs O(log n) per finishing sequence, not O(n).

KV accounting (tokens): prompt blocks live in the prefix cache (shared, pinned while used); the output
and any prompt tail not covered by blocks are private to the request and reserved in full at admission
(SGLang reserves incrementally with a decaying new-token ratio; full reservation is the conservative
simplification). Admission is FIFO and waits while the KV pool cannot fit the head request even after
evicting every unreferenced cached block, or while ``max_running_requests`` are running.
Generated tokens are not inserted into the cache (traces only give block ids for prompts). A prompt's
new blocks enter the cache at admission rather than chunk by chunk as SGLang inserts them, so a request
sharing the prefix that arrives during that prefill already matches it (a small optimism; one prefill).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rlroute.cluster.profiles import ServingProfile
from rlroute.cluster.sim.prefix_cache import Pin, PrefixCache

if TYPE_CHECKING:
    from rlroute.cluster.sim.cluster import Job

IDLE, PREFILL, DECODE = 0, 1, 2
TAU = 60.0  # seconds: decay constant of the "recent" rates reported in the state
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


class Seq:
    """One placement of one stage of a job on an instance (a retry or a hybrid stage is a new Seq)."""

    __slots__ = ("blocks", "bs", "c0", "cached", "covered", "job", "nblocks", "output", "pinned", "prefill_left",
                 "private", "prompt", "t_admit", "t_enq", "t_first", "uid")

    def __init__(self, job: Job, prompt: int, output: int, blocks: tuple[int, ...], bs: int, uid: int) -> None:
        self.job = job
        self.prompt = prompt
        self.output = output
        covered = min(len(blocks) * bs, job.req.input_len, prompt)
        nb = -(-covered // bs)
        self.blocks = blocks if nb == len(blocks) else blocks[:nb]
        self.nblocks = nb
        self.bs = bs
        self.covered = covered
        self.uid = uid
        self.cached = 0
        self.prefill_left = 0
        self.private = 0
        self.pinned: list[Pin] = []
        self.c0 = 0
        self.t_enq = self.t_admit = self.t_first = 0.0


class Instance:
    """A serving instance. ``push(time, instance, version)`` schedules its next boundary in the cluster's
    event heap; ``done(instance, seq, time)`` and ``reject(instance, seq, reason, time)`` report back."""

    __slots__ = ("a", "b", "c", "cache", "e_tot", "f", "g", "q", "chunk", "clock", "ctx_base", "d", "dec", "done", "healthy",
                 "index", "kv_cap", "max_running", "paused", "pool", "prefill", "private", "profile", "push",
                 "r_evict", "r_hit", "r_out", "dclock", "r_tok", "recent_e2e", "recent_tpot", "recent_ttft",
                 "reject", "retired", "seg", "seg_base", "seg_chunk", "seg_h", "seg_steps", "seg_t0", "step",
                 "ver", "waiting", "cost", "busy_time", "completed", "_ev_seen", "routed_new", "nload")

    def __init__(self, pool: str, index: int, profile: ServingProfile, cache: PrefixCache, kv_cap: int,
                 push: Callable[[float, Instance, int], None], done: Callable[[Instance, Seq, float], None],
                 reject: Callable[[Instance, Seq, str, float], None], dclock: DecayClock | None = None) -> None:
        self.pool = pool
        self.index = index
        self.profile = profile
        ext = profile.ext  # a step adds e_tot*(1 - q**tokens) (= e*experts touched) + f*Q + g*S; None: 4-term
        x = ext or profile
        self.a, self.b, self.c, self.d = x.a, x.b, x.c, x.d
        self.f, self.g = (ext.f, ext.g) if ext else (0.0, 0.0)
        self.e_tot, self.q = (ext.e * ext.num_experts, 1.0 - ext.top_k / ext.num_experts) if ext and ext.num_experts \
            else (0.0, 1.0)
        self.chunk = profile.chunked_prefill_tokens
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
        self._ev_seen = 0
        self.cost = 0.0
        self.busy_time = 0.0
        self.completed = 0
        self.nload = 0  # queued + running, kept as a counter: routers read it for every decision
        self.routed_new = 0  # prompt tokens routed here that were not cached: the router's "tree size"

    # -- load figures -------------------------------------------------------------------------------------
    @property
    def running(self) -> int:
        return len(self.prefill) + len(self.dec)

    @property
    def load(self) -> int:
        """Requests on the instance (queued + running): what the SGLang router balances on."""
        return self.nload

    @property
    def kv_used(self) -> int:
        return self.cache.total_tokens + self.private

    # -- entry points ---------------------------------------------------------------------------------------
    def enqueue(self, seq: Seq, now: float) -> None:
        """Queue a request; an idle instance starts at once, a decode run is cut at the current step."""
        seq.t_enq = now
        self.waiting.append(seq)
        self.nload += 1
        if self.paused or not self.healthy:
            return
        if self.seg == IDLE:
            self.clock = now
            self._schedule(now)
        elif self.seg == DECODE and len(self.dec) + len(self.prefill) < self.max_running:
            self.interrupt(now)

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

    def boundary(self, t: float) -> None:
        """Event handler: the current segment (prefill step or decode run) ended at ``t``."""
        self.busy_time += t - self.seg_t0
        self.clock = t
        seg = self.seg
        self.seg = IDLE
        if seg == PREFILL:
            self.step += 1
            step = self.step
            left = self.seg_chunk
            prefill = self.prefill
            while left > 0 and prefill:
                s = prefill[0]
                take = s.prefill_left if s.prefill_left < left else left
                s.prefill_left -= take
                left -= take
                if s.prefill_left == 0:
                    prefill.popleft()
                    s.t_first = t
                    if s.output <= 1:
                        self._finish(s, t)
                    else:
                        s.c0 = s.prompt + 1 - step
                        self.ctx_base += s.c0
                        heapq.heappush(self.dec, (step + s.output - 1, s.uid, s))
        elif seg == DECODE:
            self.step += self.seg_steps
        dec = self.dec
        step = self.step
        while dec and dec[0][0] <= step:
            s = heapq.heappop(dec)[2]
            self.ctx_base -= s.c0
            self._finish(s, t)
        if self.healthy and not self.paused:
            self._schedule(t)

    def resume(self, now: float) -> None:
        """Continue generation after a pause."""
        self.paused = False
        if self.healthy and self.seg == IDLE:
            self.clock = now
            self._schedule(now)

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
        self.cache.clear()
        return seqs

    # -- internals -------------------------------------------------------------------------------------------
    def _finish(self, s: Seq, t: float) -> None:
        self.cache.release(s.pinned, t)
        s.pinned = []
        self.private -= s.private
        self.nload -= 1
        self.completed += 1
        self.done(self, s, t)

    def _schedule(self, t: float) -> None:
        if self.waiting:
            self._admit(t)
        prefill = self.prefill
        dec = self.dec
        n = len(dec)
        if prefill:
            chunk, budget, f, g = 0, self.chunk, self.f, self.g
            if f or g:  # attention: f per pair among a prompt's new tokens, g per pair to its earlier KV
                hf = 0.5 * f
                att = 0.0
                for s in prefill:
                    left = s.prefill_left
                    take = budget - chunk if chunk + left > budget else left
                    att += take * (hf * (take + 1) + g * (s.prompt - left))
                    chunk += take
                    if chunk >= budget:
                        break
                dt = self.a + self.b * chunk + self.c * n + self.d * (self.ctx_base + n * self.step) + att
            else:
                for s in prefill:
                    chunk += s.prefill_left
                    if chunk >= budget:
                        chunk = budget
                        break
                dt = self.a + self.b * chunk + self.c * n + self.d * (self.ctx_base + n * self.step)
            if self.e_tot:
                dt += self.e_tot * (1.0 - self.q ** (chunk + n))
            self.seg = PREFILL
            self.seg_chunk = chunk
            self.seg_t0 = t
            self.ver += 1
            self.push(t + dt, self, self.ver)
        elif n:
            k = dec[0][0] - self.step
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

    def _admit(self, t: float) -> None:
        cache = self.cache
        if t >= cache.expire_at:
            cache.expire(t)
        waiting = self.waiting
        cap = self.kv_cap
        while waiting:
            if len(self.prefill) + len(self.dec) >= self.max_running:
                return
            s = waiting[0]
            bs = s.bs
            # probe the match and how much of it is currently evictable (must not count as free room)
            m, matched_free = cache.probe(s.blocks)
            covered = s.covered
            matched_tokens = covered if m == s.nblocks else m * bs
            private = s.prompt - covered + s.output
            need = covered - matched_tokens + private
            if s.prompt + s.output > cap:
                waiting.popleft()
                self.nload -= 1
                self.reject(self, s, f"prompt+output {s.prompt + s.output} tokens exceed the KV pool "
                               f"({cap} tokens) of {self.pool}[{self.index}]", t)
                continue
            room = cap - cache.total_tokens - self.private + cache.free_tokens - matched_free
            if need > room:
                return
            waiting.popleft()
            s.pinned, _, _ = cache.acquire(s.blocks, bs, covered, t)
            over = cache.total_tokens + self.private + private - cap
            if over > 0:
                cache.make_room(over)
            self.private += private
            s.private = private
            cached = matched_tokens if matched_tokens < s.prompt else s.prompt - 1
            s.cached = cached
            s.prefill_left = s.prompt - cached
            s.t_admit = t
            cache.hit_tokens += cached
            cache.miss_tokens += s.prompt - cached
            cache.hit_blocks += m
            cache.miss_blocks += s.nblocks - m
            w = self.dclock.weight(t)
            self.r_hit += cached * w
            self.r_tok += s.prompt * w
            self.prefill.append(s)

    def rescale(self, f: float) -> None:
        """Decay clock rebase."""
        self.r_out *= f
        self.r_hit *= f
        self.r_tok *= f
        self.r_evict *= f

    def note_evictions(self, now: float) -> None:
        """Fold evictions counted by the cache since the last call into the recent eviction rate."""
        ev = self.cache.evicted_tokens
        if ev != self._ev_seen:
            w = self.dclock.weight(now)  # first: a clock rebase rescales r_evict
            self.r_evict += (ev - self._ev_seen) * w
            self._ev_seen = ev

    def stats(self, now: float) -> dict[str, Any]:
        """Recent-window rates at ``now`` (decayed with time constant ``TAU``)."""
        self.note_evictions(now)
        f = self.dclock.factor(now)
        return {
            "throughput": self.r_out * f / TAU,
            "cache_hit_rate": self.r_hit / self.r_tok if self.r_tok > 0 else 0.0,
            "evictions_rate": self.r_evict * f / TAU,
        }
