"""SGLang's scheduler as the simulated instance model (``scheduler.kind: sglang``, the default).

Each rule follows sgl-project/sglang ``python/sglang/srt/`` (the function named):

* **Prefill first, alone** (``managers/scheduler.py``, ``Scheduler.get_next_batch_to_run``): at every
  step boundary a prefill batch is formed if it can be; it runs without the running batch, whose
  sequences wait (``enable_mixed_chunk`` off). With ``mixed_chunk`` the running batch decodes one token in
  the same step (``ScheduleBatch.mix_with_running``) and its size is taken off the step's prefill budgets.
  Only when no prefill batch can be formed does the running batch decode.
* **Prefill batch** (``managers/schedule_policy.py``, ``PrefillAdder``): the request being chunked goes
  first (``add_chunked_req``), then waiting requests in queue order (``fcfs``; ``lpm`` = longest cached
  prefix first, FCFS above 128 waiting, ``SchedulePolicy.calc_priority``) while the step has
  ``chunked_prefill_size`` tokens and ``max_prefill_tokens`` input tokens left (``add_one_req``; a
  request longer than what is left is chunked, at most one at a time). A request is admitted only if
  ``extend + min(max_new_tokens, CLIP_MAX_NEW_TOKENS) < rem_total_tokens``, where ``rem_total_tokens`` is
  free + evictable KV (its own matched prefix locked first, ``_lock_node``) minus, for every running
  request, ``min(max_new_tokens - generated, 4096) * new_token_ratio``
  (``_get_running_request_total_token_offset``) and minus what this batch has taken. The scheduler never
  reads a request's true output length. A refusal for memory or ``max_running_requests`` marks the batch
  full (``batch_is_full``): no prefill is tried again until a running request finishes or is retracted
  (``Scheduler.update_running_batch``), so a decode run then goes uninterrupted to the next finish.
* **Decode** (``Scheduler.update_running_batch``): each decode step decays ``new_token_ratio`` by its
  decay down to its minimum. When the next step cannot get one KV token per running request even after
  evicting the cache (``ScheduleBatch.check_decode_mem``), ``ScheduleBatch.retract_decode`` retracts
  requests — the fewest generated tokens first, then the longest prompt — until ``retract_decode_steps``
  (20) steps of headroom remain for the rest (at least one, never the last); their decoded KV is freed,
  their prompt stays cached unpinned, they go to the back of the queue and later re-prefill prompt +
  generated tokens (hitting whatever of the prompt survived), and ``new_token_ratio`` becomes
  ``(decoded + 20 * bs) / sum(max_new_tokens)`` over the requests kept (at most 1).

KV (tokens): the cache holds prompt blocks (pinned while used) and finished outputs; ``private`` holds the
prompt tail not covered by blocks, tokens re-prefilled after a retraction, and every token decoded so
far (one per request per decode step, allocated as SGLang's ``prepare_for_decode`` does). Approximations:
a whole prompt's blocks are allocated at admission rather than chunk by chunk; eviction for decode
tokens happens at the end of each decode run rather than step by step (same victims, as nothing touches
the cache in between); page size is the request's block size.
"""

from __future__ import annotations

import heapq

from rlroute.cluster.sim.instance import DECODE, IDLE, PREFILL, Instance
from rlroute.cluster.sim.job import Seq
from rlroute.cluster.sim.scheduler import LPM_MAX_QUEUE


def _batch_order(s: Seq) -> tuple[int, float, int]:
    return s.join, s.t_admit, s.uid


class SGLangInstance(Instance):
    """SGLang scheduler semantics (module doc)."""

    __slots__ = ("batch", "clip", "clip_heap", "clip_tok", "decay", "full", "min_ratio", "mixed", "n_clipped",
                 "n_unclipped", "ratio", "res_a", "retracted",
                 "retracted_total")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        sc = self.sched
        self.decay, self.min_ratio = sc.new_token_ratio_decay, sc.min_new_token_ratio
        self.clip, self.mixed = sc.clip_max_new_tokens, sc.mixed_chunk
        self.batch: list[tuple[Seq, int]] = []  # (sequence, prompt tokens) of the prefill step in flight
        self.full = False  # SGLang batch_is_full
        self.ratio = self.sched.init_new_token_ratio
        self.retracted = False  # the decode step after a retraction sets the ratio instead of decaying it
        self.retracted_total = 0  # requests retracted so far (SGLang's total_retracted_reqs)
        # reservation of the running batch at decode step X: n_clipped*CLIP + res_a - n_unclipped*X
        self.res_a = self.n_unclipped = self.n_clipped = self.clip_tok = 0
        self.clip_heap: list[tuple[int, int, Seq, int]] = []  # (step the clip ends, uid, seq, its clip token)

    def _wants_interrupt(self) -> bool:
        return not self.full and len(self.dec) < self.max_running

    def _reset_batch(self) -> None:
        self.batch.clear()
        self.full = self.retracted = False
        self.ratio = self.sched.init_new_token_ratio
        self.res_a = self.n_unclipped = self.n_clipped = 0
        self.clip_heap.clear()

    # -- running-batch bookkeeping ------------------------------------------------------------------------
    def _join(self, s: Seq, gen: int) -> None:
        step = self.step
        s.gen, s.join = gen, step
        s.c0 = s.prompt + gen - step
        self.ctx_base += s.c0
        heapq.heappush(self.dec, (step + s.output - gen, s.uid, s))
        left = s.max_new - gen
        clip = self.clip
        if left > clip:  # reserved at the clip until it has generated max_new - clip tokens
            self.n_clipped += 1
            self.clip_tok += 1
            s.clip = self.clip_tok
            heapq.heappush(self.clip_heap, (step + left - clip, s.uid, s, s.clip))
        else:
            self.res_a += left + step
            self.n_unclipped += 1

    def _leave(self, s: Seq) -> None:
        """Take ``s`` out of the running batch's sums (its decoded KV leaves ``private``)."""
        self.ctx_base -= s.c0
        self.private -= self.step - s.join
        if s.clip:
            self.n_clipped -= 1
            s.clip = 0
        else:
            self.res_a -= s.max_new - s.gen + s.join
            self.n_unclipped -= 1

    def generated(self, s: Seq, now: float) -> int:
        """Tokens of decoding ``s`` by ``now``: those before it joined plus one per decode step since."""
        return s.gen + self.step + self._run_steps_by(now) - s.join

    def _drop_decoding(self, s: Seq) -> None:
        self._leave(s)
        self.full = False

    def _unclip(self) -> None:
        heap, step = self.clip_heap, self.step
        while heap and heap[0][0] <= step:
            _, _, s, tok = heapq.heappop(heap)
            if s.clip == tok:
                s.clip = 0
                self.n_clipped -= 1
                self.res_a += s.max_new - s.gen + s.join
                self.n_unclipped += 1

    # -- events ------------------------------------------------------------------------------------------
    def boundary(self, t: float) -> None:
        """Event handler: the current segment (prefill step or decode run) ended at ``t``."""
        self.busy_time += t - self.seg_t0
        self.clock = t
        seg = self.seg
        self.seg = IDLE
        if seg == PREFILL:
            if self.seg_steps:  # mixed chunk: the running batch decoded one token in this step
                self.step += 1
                self.private += len(self.dec)
            prefill = self.prefill
            for s, take in self.batch:
                s.prefill_left -= take
                if s.prefill_left:
                    continue
                prefill.popleft()  # completions are always the head: the chunked request was admitted first
                gen = s.gen + 1
                if s.t_first < 0:
                    s.t_first = t
                if gen >= s.output:
                    self.full = False
                    self._finish(s, t)
                else:
                    self._join(s, gen)
            self.batch.clear()
        elif seg == DECODE:
            k = self.seg_steps
            self.step += k
            self.private += len(self.dec) * k
            if self.retracted:
                k -= 1
                self.retracted = False
            ratio = self.ratio - k * self.decay
            self.ratio = ratio if ratio > self.min_ratio else self.min_ratio
        dec = self.dec
        step = self.step
        while dec and dec[0][0] <= step:
            s = heapq.heappop(dec)[2]
            self._leave(s)
            self.full = False
            self._finish(s, t)
        over = self.cache.total_tokens + self.private - self.kv_cap
        if over > 0:
            self.cache.make_room(over)
        if self.healthy and not self.paused:
            self._schedule(t)

    def _schedule(self, t: float) -> None:
        if self.prefill or (self.waiting and not self.full):
            self._admit(t)
        batch = self.batch
        if batch:
            f, g = self.f, self.g
            chunk = 0
            att = 0.0
            hf = 0.5 * f
            for s, take in batch:
                chunk += take
                if f or g:
                    att += take * (hf * (take + 1) + g * (s.prompt + s.gen - s.prefill_left))
            n = len(self.dec) if self.mixed else 0
            self.seg = PREFILL
            self.seg_steps = 1 if n else 0
            self.seg_chunk = chunk
            self.seg_t0 = t
            self.ver += 1
            self.push(t + self._prefill_time(chunk, att, n), self, self.ver)
            return
        dec = self.dec
        if not dec:
            return
        n = len(dec)
        free = self.kv_cap - self.cache.total_tokens + self.cache.free_tokens - self.private
        if free < n:
            self._retract(t)
            n = len(dec := self.dec)
            free = self.kv_cap - self.cache.total_tokens + self.cache.free_tokens - self.private
        k = dec[0][0] - self.step
        if self.waiting and not self.full:
            k = 1  # SGLang looks for a prefill batch before every decode step
        elif free < n * k:  # the KV pool runs out first: stop where retract_decode will be needed
            k = free // n if free >= n else 1
        self._decode_run(t, k)

    # -- admission (PrefillAdder) -------------------------------------------------------------------------
    def _admit(self, t: float) -> None:
        sc = self.sched
        cache = self.cache
        if t >= cache.expire_at:
            cache.expire(t)
        if self.clip_heap:
            self._unclip()
        cap = self.kv_cap
        clip = self.clip
        n = len(self.dec)
        mixed = n if self.mixed else 0
        rem_chunk = self.chunk - mixed
        rem_input = sc.max_prefill_tokens - mixed
        offset = self.ratio * (self.n_clipped * clip + self.res_a - self.n_unclipped * self.step) + mixed
        free0 = cap - cache.total_tokens + cache.free_tokens - self.private  # available + evictable
        locked = 0
        batch, prefill, waiting = self.batch, self.prefill, self.waiting
        if prefill:  # add_chunked_req: the request being chunked continues first
            s = prefill[0]
            take = s.prefill_left if s.prefill_left < rem_chunk else rem_chunk
            if take > 0:
                batch.append((s, take))
                if take == s.prefill_left:
                    left = s.max_new - s.gen
                    offset += left if left < clip else clip
                offset += take
                rem_chunk -= take
                rem_input -= take
        if not waiting or self.full or rem_chunk <= 0 or rem_input <= 0:
            return
        if sc.schedule_policy == "lpm" and 1 < len(waiting) <= LPM_MAX_QUEUE:
            order = sorted(waiting, key=lambda x: -cache.probe(x.blocks)[0] * x.bs)  # stable: FCFS among ties
            waiting.clear()
            waiting.extend(order)
        while waiting:
            if n + len(batch) >= self.max_running:
                self.full = True
                return
            s = waiting[0]
            if s.t_admit < 0 and (s.prompt + s.output > cap or s.prompt + min(s.max_new, clip) >= cap):
                waiting.popleft()
                self._reject_too_long(s, t, s.prompt + min(s.max_new, clip) + 1)
                continue
            m, mfree = cache.probe(s.blocks)
            matched = s.covered if m == s.nblocks else m * s.bs
            fill = s.prompt + s.gen
            cached = matched if matched < fill else fill - 1  # SGLang computes at least one token
            extend = fill - cached
            max_new = s.max_new - s.gen
            if max_new > clip:
                max_new = clip
            if extend + max_new >= free0 - locked - mfree - offset:
                self.full = True  # AddReqResult.NO_TOKEN
                return
            if batch and extend > rem_input:
                return  # AddReqResult.OTHER
            waiting.popleft()
            s.pinned, _, _ = cache.acquire(s.blocks, s.bs, s.covered, t)
            locked += mfree
            s.private = s.prompt - s.covered + s.gen
            self.private += s.private
            over = cache.total_tokens + self.private - cap
            if over > 0:
                cache.make_room(over)
            s.prefill_left = extend
            if s.t_admit < 0:
                s.t_admit = t
                s.cached = cached
                self._count_admission(s, m, t)
            if extend <= rem_chunk:
                take = extend
                offset += extend + max_new
            else:
                take = rem_chunk  # the new chunked request
                offset += take
            rem_chunk -= take
            rem_input -= take
            prefill.append(s)
            batch.append((s, take))
            if free0 - locked - offset <= 0:
                self.full = True  # budget_state: NO_TOKEN
                return
            if rem_chunk <= 0 or rem_input <= 0:
                return  # budget_state: OTHER

    # -- retraction (ScheduleBatch.retract_decode) --------------------------------------------------------
    def retract_all(self, t: float) -> int:
        """``pause_generation`` with ``mode: retract`` (SGLang ``PauseGenerationReqInput``): every request of the
        running batch — and a chunked prefill in progress — goes back to the waiting queue with its KV freed,
        to be recomputed after ``continue_generation``; call between steps (the instance idle). Returns how
        many requests were retracted."""
        assert self.seg == IDLE, "retract between steps"
        cache, step = self.cache, self.step
        seqs = sorted((e[2] for e in self.dec), key=_batch_order)
        for s in seqs:
            self._leave(s)
            s.gen += step - s.join
        seqs = list(self.prefill) + seqs
        for s in seqs:
            cache.release(s.pinned, t)
            s.pinned = []
            self.private -= s.private
            s.private = 0
        self.dec = []
        self.prefill.clear()
        self.waiting.extend(seqs)
        self.retracted_total += len(seqs)
        self.full = False
        return len(seqs)

    def _retract(self, t: float) -> None:
        sc, cache = self.sched, self.cache
        step = self.step
        keep = sorted((e[2] for e in self.dec), key=_batch_order)  # the running batch in join order
        keep.sort(key=lambda s: (s.gen + step - s.join, -s.prompt), reverse=True)
        retracted: list[Seq] = []
        first = True
        while len(keep) > 1:
            free = self.kv_cap - cache.total_tokens + cache.free_tokens - self.private
            if not first and free >= sc.retract_decode_steps * len(keep):
                break
            first = False
            s = keep.pop()  # fewest generated tokens, then the longest prompt
            self._leave(s)
            s.gen += step - s.join
            cache.release(s.pinned, t)
            s.pinned = []
            self.private -= s.private
            s.private = 0
            retracted.append(s)
        gone = {id(s) for s in retracted}
        self.dec = [e for e in self.dec if id(e[2]) not in gone]
        heapq.heapify(self.dec)
        decoded = sum(s.gen + step - s.join for s in keep)
        self.ratio = min(1.0, (decoded + sc.retract_decode_steps * len(keep)) / sum(s.max_new for s in keep))
        self.waiting.extend(retracted)
        self.retracted_total += len(retracted)
        self.full = False
        self.retracted = True
