"""The simulator's instance model, wrapped for the emulated worker's engine.

The worker does not model serving itself: step time, KV capacity and limits come from the serving
profile the simulator uses (:func:`rlroute.cluster.profiles.load_profile`), and the prefix cache is the
simulator's cache class, so a live run and a simulated run of the same trace share one model. This
module only adds the bookkeeping the engine needs (KV reservations of running requests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class PrefixCache(Protocol):
    """The part of the simulator's prefix cache the worker uses (block ids, ``block_size`` tokens)."""

    def match(self, blocks: tuple[int, ...]) -> int: ...
    def acquire(self, blocks: tuple[int, ...]) -> None: ...
    def release(self, blocks: tuple[int, ...]) -> None: ...
    def insert(self, blocks: tuple[int, ...]) -> None: ...
    def evict(self, tokens: int) -> int: ...
    def flush(self) -> int: ...
    @property
    def tokens(self) -> int: ...


@dataclass
class InstanceModel:
    """Step-time model, memory and prefix cache of one serving instance.

    Attributes:
        step_time_fn: seconds of one engine step given (prefill tokens, decoding sequences, context
            tokens of the decoding sequences).
        cache: prefix cache over block ids.
        block_size: tokens per cache block.
        kv_capacity_tokens: KV pool size in tokens (profile memory and ``mem_fraction_static``).
        max_running_requests: batch limit.
        chunked_prefill_tokens: prefill tokens per step at most.
        profile_name: the serving profile it came from.
    """

    step_time_fn: Callable[[int, int, int], float]
    cache: PrefixCache
    block_size: int
    kv_capacity_tokens: int
    max_running_requests: int
    chunked_prefill_tokens: int
    profile_name: str = ""
    reserved_tokens: int = 0  # KV held by admitted requests (uncached prompt + generation budget)

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        """Virtual seconds of one step; never zero, so the engine always advances."""
        return max(1e-6, float(self.step_time_fn(prefill_tokens, decode_seqs, context_tokens)))

    @property
    def kv_used_tokens(self) -> int:
        """Tokens of KV memory in use: running requests' reservations plus the prefix cache."""
        return self.reserved_tokens + self.cache.tokens

    def match(self, blocks: tuple[int, ...]) -> int:
        """Prompt tokens already held by the prefix cache."""
        return self.cache.match(blocks) * self.block_size

    def reserve(self, tokens: int) -> bool:
        """Reserve KV for a request, evicting unreferenced cache blocks if needed; False if it can't fit."""
        free = self.kv_capacity_tokens - self.kv_used_tokens
        if free < tokens:
            self.cache.evict(tokens - free)
            free = self.kv_capacity_tokens - self.kv_used_tokens
        if free < tokens:
            return False
        self.reserved_tokens += tokens
        return True

    def acquire(self, blocks: tuple[int, ...]) -> None:
        """Pin a running request's cached blocks so eviction skips them."""
        self.cache.acquire(blocks)

    def release(self, blocks: tuple[int, ...], reserved: int) -> None:
        """Unpin blocks and return a finished request's KV reservation."""
        self.cache.release(blocks)
        self.reserved_tokens = max(0, self.reserved_tokens - reserved)

    def insert(self, blocks: tuple[int, ...]) -> None:
        """Keep a finished request's prompt blocks in the prefix cache."""
        self.cache.insert(blocks)

    def flush(self) -> int:
        """Drop every unreferenced cached block; returns the tokens freed."""
        return self.cache.flush()


def build_instance_model(profile: str, cache: dict[str, Any], mem_fraction_static: float, block_size: int) -> InstanceModel:
    """Build the instance model of ``profile`` with the simulator's classes.

    Args:
        profile: serving profile name (file stem in ``rlroute/cluster/profiles/``).
        cache: prefix-cache config of the pool (``policy``: lru | lfu | ttl, ``ttl_s``, ...).
        mem_fraction_static: SGLang's share of GPU memory for weights + KV pool.
        block_size: tokens per cache block.

    Returns:
        The model the engine steps.
    """
    from rlroute.worker._sim_bridge import bridge  # the simulator's API, in one place

    return bridge(profile, cache, mem_fraction_static, block_size)
