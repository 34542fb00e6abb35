"""The simulator's instance model, wrapped for the emulated worker's engine.

The worker does not model serving itself: step time, KV capacity and limits come from the serving
profile the simulator uses, and the prefix cache is the simulator's
:class:`rlroute.cluster.sim.prefix_cache.PrefixCache` (LRU / LFU / TTL over chained block ids), so a live
run and a simulated run of the same trace share one model. This module adds only the KV bookkeeping of
running requests that the engine needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlroute.cluster.sim.prefix_cache import Pin, PrefixCache


@dataclass
class InstanceModel:
    """Step-time model, memory and prefix cache of one serving instance.

    Attributes:
        step_time_fn: seconds of one engine step given (prefill tokens, decoding sequences, context
            tokens of the decoding sequences, prefill attention pairs, prefix attention pairs), as
            :meth:`rlroute.cluster.profiles.ServingProfile.step_time`.
        cache: the simulator's prefix cache (block ids, ``block_size`` tokens each).
        block_size: tokens per cache block.
        kv_capacity_tokens: KV pool size in tokens (profile memory and ``mem_fraction_static``).
        max_running_requests: batch limit.
        chunked_prefill_tokens: prefill tokens per step at most.
        profile_name: the serving profile it came from.
    """

    step_time_fn: Callable[[int, int, int, float | None, float], float]
    cache: PrefixCache
    block_size: int
    kv_capacity_tokens: int
    max_running_requests: int
    chunked_prefill_tokens: int
    profile_name: str = ""
    reserved_tokens: int = 0  # KV of running requests outside the cache: partial tail + generation budget

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int,
                  prefill_pairs: float | None = None, prefix_pairs: float = 0.0) -> float:
        """Virtual seconds of one step; never zero, so the engine always advances.

        ``prefill_pairs`` / ``prefix_pairs``: the chunk's attention pairs (``Q`` / ``S`` of
        :mod:`rlroute.cluster.profiles`); ``None`` prices the chunk as one prompt from position 0.
        """
        t = self.step_time_fn(prefill_tokens, decode_seqs, context_tokens, prefill_pairs, prefix_pairs)
        return max(1e-6, float(t))

    @property
    def kv_used_tokens(self) -> int:
        """Tokens of KV memory in use: running requests' reservations plus every cached block."""
        return self.reserved_tokens + self.cache.total_tokens

    def admit(
        self, blocks: tuple[int, ...], prompt_tokens: int, max_new_tokens: int, now: float
    ) -> tuple[list[Pin], int, int] | None:
        """Reserve KV for a request and pin its blocks, as the simulator's instance admits a sequence.

        The matched prefix's evictable tokens do not count as free room (pinning them keeps them), then
        unreferenced blocks are evicted to make room for the rest.

        Returns:
            ``(pins, cached prompt tokens, private tokens)``, or None when it cannot fit now.
        """
        cache = self.cache
        if now >= cache.expire_at:
            cache.expire(now)
        bs = self.block_size
        covered = min(len(blocks) * bs, prompt_tokens)
        m, matched_free = cache.probe(blocks)
        matched = min(m * bs, covered)
        private = prompt_tokens - covered + max_new_tokens  # partial tail + generation budget
        need = covered - matched + private
        room = self.kv_capacity_tokens - cache.total_tokens - self.reserved_tokens + cache.free_tokens - matched_free
        if need > room:
            return None
        pins, _, _ = cache.acquire(blocks, bs, covered, now)
        over = cache.total_tokens + self.reserved_tokens + private - self.kv_capacity_tokens
        if over > 0:
            cache.make_room(over)
        self.reserved_tokens += private
        cache.hit_tokens += matched
        cache.miss_tokens += prompt_tokens - matched
        cache.hit_blocks += m
        cache.miss_blocks += len(blocks) - m
        return pins, matched, private

    def release(self, pins: list[Pin], reserved: int, now: float) -> None:
        """Unpin a finished request's blocks (they stay cached, evictable) and free its private KV."""
        self.cache.release(pins, now)
        self.reserved_tokens = max(0, self.reserved_tokens - reserved)

    def flush(self) -> int:
        """SGLang ``flush_cache``; returns the cached tokens dropped (pinned ones go when released)."""
        before = self.cache.free_tokens
        self.cache.flush()
        return before


def build_instance_model(profile: str, cache: dict[str, Any], mem_fraction_static: float | str,
                         block_size: int) -> InstanceModel:
    """Build the instance model of ``profile`` with the simulator's profile and cache classes.

    Args:
        profile: serving profile name (``load_profile``: measured > derived > estimate file of that stem).
        cache: prefix-cache config of the pool (``policy``: lru | lfu | ttl, ``ttl_s``).
        mem_fraction_static: SGLang's share of GPU memory for weights + KV pool, or ``auto`` (SGLang's
            default for a dedicated server, :func:`rlroute.cluster.profiles.sglang_defaults.resolve_mem_fraction`).
        block_size: tokens per cache block.
    """
    from rlroute.cluster.profiles import load_profile
    from rlroute.cluster.profiles.sglang_defaults import resolve_mem_fraction

    prof = load_profile(profile)
    mfs = resolve_mem_fraction(mem_fraction_static, prof, "worker")
    return InstanceModel(
        step_time_fn=prof.step_time,
        cache=PrefixCache(policy=str(cache.get("policy", "lru")), ttl_s=cache.get("ttl_s"), block_size=block_size),
        block_size=block_size,
        kv_capacity_tokens=prof.kv_capacity_tokens(mfs),
        max_running_requests=prof.max_running_requests,
        chunked_prefill_tokens=prof.chunked_prefill_tokens,
        profile_name=prof.name,
    )
