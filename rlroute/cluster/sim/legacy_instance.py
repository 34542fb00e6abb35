"""The first simulator's instance model (``scheduler.kind: legacy``), kept as a named option.

vLLM-V1-like continuous batching:

* a *prefill step* runs while admitted requests still have prompt tokens to compute; it takes up to
  ``chunked_prefill_size`` of them (FIFO) and every decoding sequence also gains a token (mixed batch);
* otherwise a *decode run* covers all steps up to the next sequence to finish; a new request interrupts
  it at the end of the step in progress while the batch has room (``max_running_requests``).

KV: the output and any prompt tail not covered by blocks are private to the request and reserved in full
at admission — the true output length, which a real scheduler cannot know. Admission is FIFO and waits
while the KV pool cannot fit the head request even after evicting every unreferenced cached block, or
while ``max_running_requests`` are running. Nothing is ever preempted. (SGLang's model, the default, is
:mod:`rlroute.cluster.sim.sglang_instance`.)
"""

from __future__ import annotations

import heapq

from rlroute.cluster.sim.instance import DECODE, IDLE, PREFILL, Instance
from rlroute.cluster.sim.job import Seq


class LegacyInstance(Instance):
    """Mixed prefill+decode steps, true-length reservation, no preemption (module doc)."""

    __slots__ = ()

    def _wants_interrupt(self) -> bool:
        return len(self.dec) + len(self.prefill) < self.max_running

    def generated(self, s: Seq, now: float) -> int:
        """Tokens of decoding ``s`` by ``now``: the prefill's one plus one per step since it joined (every
        step decodes, so ``step - join``, with ``join = prompt + 1 - c0``)."""
        return 1 + self.step + self._run_steps_by(now) - (s.prompt + 1 - s.c0)

    def _drop_decoding(self, s: Seq) -> None:
        self.ctx_base -= s.c0

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

    def _schedule(self, t: float) -> None:
        if self.waiting:
            self._admit(t)
        prefill = self.prefill
        n = len(self.dec)
        if prefill:
            chunk, budget, f, g = 0, self.chunk, self.f, self.g
            att = 0.0
            if f or g:  # attention: f per pair among a prompt's new tokens, g per pair to its earlier KV
                hf = 0.5 * f
                for s in prefill:
                    left = s.prefill_left
                    take = budget - chunk if chunk + left > budget else left
                    att += take * (hf * (take + 1) + g * (s.prompt - left))
                    chunk += take
                    if chunk >= budget:
                        break
            else:
                for s in prefill:
                    chunk += s.prefill_left
                    if chunk >= budget:
                        chunk = budget
                        break
            self.seg = PREFILL
            self.seg_chunk = chunk
            self.seg_t0 = t
            self.ver += 1
            self.push(t + self._prefill_time(chunk, att, n), self, self.ver)
        elif n:
            self._decode_run(t, self.dec[0][0] - self.step)

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
                self._reject_too_long(s, t)
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
            s.cached = matched_tokens if matched_tokens < s.prompt else s.prompt - 1
            s.prefill_left = s.prompt - s.cached
            s.t_admit = t
            self._count_admission(s, m, t)
            self.prefill.append(s)
