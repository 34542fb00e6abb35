"""The simulator's instance model, configured for the emulated worker's engine.

The worker does not model serving itself: it runs the simulator's instance class
(:class:`rlroute.cluster.sim.sglang_instance.SGLangInstance` by default, or the legacy model — the same
``scheduler`` options as a simulated pool, :mod:`rlroute.cluster.sim.scheduler`) with the serving profile's
step time, KV capacity and limits and the simulator's :class:`~rlroute.cluster.sim.prefix_cache.PrefixCache`,
so a live run and a simulated run of the same trace share one model, line for line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlroute.cluster.profiles import ServingProfile
from rlroute.cluster.sim.instance import Instance
from rlroute.cluster.sim.job import Seq
from rlroute.cluster.sim.pool import INSTANCE_CLASSES
from rlroute.cluster.sim.prefix_cache import PrefixCache
from rlroute.cluster.sim.scheduler import SchedulerConfig, parse_scheduler


@dataclass
class InstanceModel:
    """Profile, memory, scheduler options and prefix cache of one serving instance.

    Attributes:
        profile: the serving profile (step time, memory, limits).
        cache: the simulator's prefix cache (block ids, ``block_size`` tokens each).
        block_size: tokens per cache block (the page size the worker matches prompts at).
        kv_capacity_tokens: KV pool size in tokens (profile memory and ``mem_fraction_static``).
        sched: scheduler options (``kind: sglang`` by default).
    """

    profile: ServingProfile
    cache: PrefixCache
    block_size: int
    kv_capacity_tokens: int
    sched: SchedulerConfig

    @property
    def profile_name(self) -> str:
        return self.profile.name

    @property
    def max_running_requests(self) -> int:
        return self.profile.max_running_requests

    @property
    def chunked_prefill_tokens(self) -> int:
        return self.sched.chunk_size(self.profile.gpu_memory_gb, self.profile.chunked_prefill_tokens)

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int,
                  prefill_pairs: float | None = None, prefix_pairs: float = 0.0) -> float:
        """Seconds of one step (:meth:`rlroute.cluster.profiles.ServingProfile.step_time`)."""
        return self.profile.step_time(prefill_tokens, decode_seqs, context_tokens, prefill_pairs, prefix_pairs)

    def new_instance(self, push: Callable[[float, Instance, int], None], done: Callable[[Instance, Seq, float], None],
                     reject: Callable[[Instance, Seq, str, float], None]) -> Instance:
        """The instance this model describes, wired to the engine's event heap and callbacks."""
        cls = INSTANCE_CLASSES[self.sched.kind]
        return cls("worker", 0, self.profile, self.cache, self.kv_capacity_tokens, push, done, reject,
                   sched=self.sched, insert_outputs=True)

    def flush(self) -> int:
        """SGLang ``flush_cache``; returns the cached tokens dropped (pinned ones go when released)."""
        before = self.cache.free_tokens
        self.cache.flush()
        return before


def build_instance_model(profile: str, cache: Mapping[str, Any], mem_fraction_static: float | str, block_size: int,
                         scheduler: Mapping[str, Any] | None = None) -> InstanceModel:
    """Build the instance model of ``profile`` with the simulator's profile, cache and scheduler classes.

    Args:
        profile: serving profile name (``load_profile``: measured > derived > estimate file of that stem).
        cache: prefix-cache config of the pool (``policy``: lru | lfu | ttl, ``ttl_s``).
        mem_fraction_static: SGLang's share of GPU memory for weights + KV pool, or ``auto`` (SGLang's
            default for a dedicated server, :func:`rlroute.cluster.profiles.sglang_defaults.resolve_mem_fraction`).
        block_size: tokens per cache block.
        scheduler: ``{kind: sglang|legacy, mixed_chunk, chunked_prefill_size, ...}``; ``None``: SGLang's.
    """
    from rlroute.cluster.profiles import load_profile
    from rlroute.cluster.profiles.sglang_defaults import resolve_mem_fraction

    prof = load_profile(profile)
    mfs = resolve_mem_fraction(mem_fraction_static, prof, "worker")
    return InstanceModel(
        profile=prof,
        cache=PrefixCache(policy=str(cache.get("policy", "lru")), ttl_s=cache.get("ttl_s"), block_size=block_size),
        block_size=block_size,
        kv_capacity_tokens=prof.kv_capacity_tokens(mfs),
        sched=parse_scheduler(scheduler, "worker.scheduler"),
    )
