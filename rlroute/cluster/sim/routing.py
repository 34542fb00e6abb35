"""In-pool worker choice: which instance of a pool serves a request (SGLang router policies).

Policies are registered in :data:`IN_POOL_POLICIES` by name and built by :func:`build_in_pool_policy`
from the pool's ``in_pool`` config (``policy`` + its parameters). Each receives the candidate instances
(healthy, not retired), the prompt tokens each would find cached (only when ``needs_match``) and the
prompt length, and returns the chosen instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from rlroute.cluster.sim.instance import Instance


class InPoolPolicy(Protocol):
    """Chooses an instance inside one pool."""

    needs_match: bool

    def choose(self, cands: list[Instance], matched: list[int] | None, prompt_tokens: int) -> Instance:
        """Pick one of ``cands`` (non-empty)."""
        ...


class CacheAware:
    """SGLang router's ``cache_aware`` rule.

    If the load is imbalanced (``max - min > balance_abs_threshold`` and ``max > balance_rel_threshold *
    min``, load = queued + running requests) route to the least loaded instance; else to the best prefix
    match when its match rate exceeds ``cache_threshold``, otherwise to the instance with the smallest
    tree. Ties go to the lowest index.

    The match is read from the instances' real caches (the simulator knows them; SGLang's router keeps an
    approximate tree of what it sent). The "tree size" is the router's notion, not the KV cache's: the
    prompt tokens routed to the instance that were not already matched there (``routed_new``). It keeps
    growing (SGLang's router tree is bounded only by ``max_tree_size``, 2^26 characters by default),
    which is what makes "smallest tree" spread cold prompts; a real KV cache saturates at capacity and
    would not.
    """

    needs_match = True

    def __init__(self, cache_threshold: float = 0.3, balance_abs_threshold: int = 64,
                 balance_rel_threshold: float = 1.5) -> None:
        if not 0.0 <= cache_threshold <= 1.0:
            raise ValueError(f"in_pool.cache_threshold must be in [0, 1], got {cache_threshold}")
        self.cache_threshold = cache_threshold
        self.abs = balance_abs_threshold
        self.rel = balance_rel_threshold

    def choose(self, cands: list[Instance], matched: list[int] | None, prompt_tokens: int) -> Instance:
        loads = [i.nload for i in cands]
        mx, mn = max(loads), min(loads)
        if mx - mn > self.abs and mx > self.rel * mn:
            return cands[loads.index(mn)]
        k = -1
        if matched:
            best = max(matched)
            if prompt_tokens > 0 and best / prompt_tokens > self.cache_threshold:
                k = matched.index(best)
        if k < 0:
            sizes = [i.routed_new for i in cands]
            k = sizes.index(min(sizes))
        chosen = cands[k]
        chosen.routed_new += prompt_tokens - (matched[k] if matched else 0)
        return chosen


class RoundRobin:
    """Cycle through the candidates."""

    needs_match = False

    def __init__(self) -> None:
        self.i = -1

    def choose(self, cands: list[Instance], matched: list[int] | None, prompt_tokens: int) -> Instance:
        self.i += 1
        return cands[self.i % len(cands)]


class ShortestQueue:
    """Least loaded (queued + running) instance; ties to the lowest index."""

    needs_match = False

    def choose(self, cands: list[Instance], matched: list[int] | None, prompt_tokens: int) -> Instance:
        loads = [i.nload for i in cands]
        return cands[loads.index(min(loads))]


class PowerOfTwo:
    """Sample two candidates at random, take the less loaded (power of two choices)."""

    needs_match = False

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def choose(self, cands: list[Instance], matched: list[int] | None, prompt_tokens: int) -> Instance:
        if len(cands) == 1:
            return cands[0]
        i, j = self.rng.choice(len(cands), size=2, replace=False)
        return cands[i] if cands[i].nload <= cands[j].nload else cands[j]


IN_POOL_POLICIES: dict[str, Callable[..., InPoolPolicy]] = {
    "cache_aware": CacheAware,
    "round_robin": RoundRobin,
    "shortest_queue": ShortestQueue,
    "power_of_two": PowerOfTwo,
}


def build_in_pool_policy(cfg: Mapping[str, Any] | None, rng: np.random.Generator) -> InPoolPolicy:
    """Build from ``{policy: <name>, **params}``; ``power_of_two`` gets ``rng``."""
    cfg = dict(cfg or {})
    name = cfg.pop("policy", "cache_aware")
    if name not in IN_POOL_POLICIES:
        raise ValueError(f"in_pool.policy must be one of {sorted(IN_POOL_POLICIES)}, got {name!r}")
    if name != "cache_aware":  # the cache_aware knobs may stay in the config when switching by override
        for k in ("cache_threshold", "balance_abs_threshold", "balance_rel_threshold"):
            cfg.pop(k, None)
    if name == "power_of_two":
        cfg["rng"] = rng
    elif name != "cache_aware" and cfg:
        raise ValueError(f"in_pool policy {name!r} takes no parameters, got {sorted(cfg)}")
    try:
        return IN_POOL_POLICIES[name](**cfg)
    except TypeError as exc:
        raise ValueError(f"in_pool policy {name!r}: bad parameters {sorted(cfg)}: {exc}") from exc
