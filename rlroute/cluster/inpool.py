"""In-pool policies: which worker of a pool serves a request, the same objects in the simulator and the router.

As sgl-model-gateway's ``LoadBalancingPolicy`` trait (``sgl-router/src/policies/mod.rs``: ``select_worker``
returns an index into the available workers; ``reset`` and the other hooks have defaults), a policy here
sees plain numbers, never a simulator or live instance: for the available workers of one pool, in one
order, their loads (queued + running requests), the prompt tokens the router believes each holds cached
(``matched``; only asked for when ``needs_match``) and the size of the router's tree for each (``sizes``),
and the request's prompt length. It returns a position in those lists. What a policy must remember
between calls (a round-robin counter, a random generator) it keeps itself.

The per-worker prefix state is the router's, kept by the pool (:class:`rlroute.cluster.router_view.RouterView`,
or in the simulator optionally the engines' own caches), because the routing features read it whatever
the in-pool policy is; sglang-router's ``CacheAwarePolicy`` owns its ``Tree`` instead
(``sgl-router/src/policies/cache_aware.rs``), which is the same data behind a different owner.

Selected in configs by Hydra ``_target_`` (one group, ``conf/cluster/in_pool/``) and built by
:func:`build_in_pool`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class InPoolPolicy:
    """Chooses a worker inside one pool (base class: every hook with its default).

    Attributes:
        needs_match: the caller must pass ``matched`` and ``sizes`` (else it may pass ``None``).
    """

    needs_match: bool = False

    def choose(self, loads: Sequence[int], matched: Sequence[int] | None, sizes: Sequence[int] | None,
               prompt_tokens: int) -> int:
        """Position of the chosen worker in ``loads`` (non-empty; all lists aligned)."""
        raise NotImplementedError

    def seed(self, rng: np.random.Generator) -> None:
        """Take the cluster's random generator (randomised policies draw from it; default: unused)."""

    def reset(self) -> None:
        """Forget what earlier decisions left behind (a new episode; default: nothing kept)."""


class CacheAware(InPoolPolicy):
    """sglang-router's ``cache_aware`` rule (``sgl-router/src/policies/cache_aware.rs``, ``select_worker``).

    If the load is imbalanced (``max - min > balance_abs_threshold`` and ``max > balance_rel_threshold *
    min``) route to the least loaded worker; else to the best prefix match when its match rate (matched /
    prompt tokens) exceeds ``cache_threshold``, otherwise to the worker with the smallest tree. Ties go
    to the lowest position. Defaults: sglang-router's launcher defaults (``py_src/sglang_router/router_args.py``:
    ``cache_threshold`` 0.3, ``balance_abs_threshold`` 64, ``balance_rel_threshold`` 1.5).

    Differences from sglang-router, both from keying on prompt blocks rather than characters: the match is
    per worker (sglang's shared tree answers the deepest node's first tenant), and the rate is in tokens.
    """

    needs_match = True

    def __init__(self, cache_threshold: float = 0.3, balance_abs_threshold: int = 64,
                 balance_rel_threshold: float = 1.5) -> None:
        if not 0.0 <= cache_threshold <= 1.0:
            raise ValueError(f"in_pool.cache_threshold must be in [0, 1], got {cache_threshold}")
        self.cache_threshold = float(cache_threshold)
        self.abs = int(balance_abs_threshold)
        self.rel = float(balance_rel_threshold)

    def choose(self, loads: Sequence[int], matched: Sequence[int] | None, sizes: Sequence[int] | None,
               prompt_tokens: int) -> int:
        mx, mn = max(loads), min(loads)
        if mx - mn > self.abs and mx > self.rel * mn:
            return list(loads).index(mn)
        if matched:
            best = max(matched)
            if prompt_tokens > 0 and best / prompt_tokens > self.cache_threshold:
                return list(matched).index(best)
        if not sizes:
            return 0
        return list(sizes).index(min(sizes))


class RoundRobin(InPoolPolicy):
    """Cycle through the workers (sglang-router ``round_robin``)."""

    def __init__(self) -> None:
        self.i = -1

    def choose(self, loads: Sequence[int], matched: Sequence[int] | None, sizes: Sequence[int] | None,
               prompt_tokens: int) -> int:
        self.i += 1
        return self.i % len(loads)

    def reset(self) -> None:
        self.i = -1


class ShortestQueue(InPoolPolicy):
    """Least loaded (queued + running) worker; ties to the lowest position."""

    def choose(self, loads: Sequence[int], matched: Sequence[int] | None, sizes: Sequence[int] | None,
               prompt_tokens: int) -> int:
        return list(loads).index(min(loads))


class PowerOfTwo(InPoolPolicy):
    """Sample two workers at random, take the less loaded (sglang-router ``power_of_two``).

    Draws from the generator given to :meth:`seed` (the cluster's, so a forked simulator copies it);
    before that from ``default_rng(0)``.
    """

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def seed(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def choose(self, loads: Sequence[int], matched: Sequence[int] | None, sizes: Sequence[int] | None,
               prompt_tokens: int) -> int:
        if len(loads) == 1:
            return 0
        i, j = self.rng.choice(len(loads), size=2, replace=False)
        return int(i) if loads[i] <= loads[j] else int(j)


def build_in_pool(cfg: Any, where: str) -> InPoolPolicy:
    """The in-pool policy of a pool config's ``in_pool`` entry.

    Args:
        cfg: a built :class:`InPoolPolicy`, a mapping ``{_target_: <class path>, **params}`` (the
            ``conf/cluster/in_pool/`` presets), or ``None`` for :class:`CacheAware` with its defaults.
        where: the config key, for error messages (``cluster.pools.small.in_pool``).
    """
    if cfg is None:
        return CacheAware()
    if isinstance(cfg, InPoolPolicy):
        return cfg
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ValueError(f"{where}: expected a mapping with _target_ (a conf/cluster/in_pool/ preset, e.g. "
                         f"{{_target_: rlroute.cluster.inpool.RoundRobin}}), got {cfg!r}")
    from hydra.utils import get_class

    params = {str(k): v for k, v in cfg.items() if not str(k).startswith("_")}
    try:
        cls = get_class(str(cfg["_target_"]))
    except Exception as exc:
        raise ValueError(f"{where}._target_: cannot import {cfg['_target_']!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, InPoolPolicy)):
        raise ValueError(f"{where}._target_: {cfg['_target_']!r} is not an rlroute.cluster.inpool.InPoolPolicy")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"{where}: bad parameters {sorted(params)} for {cls.__name__}: {exc}") from exc


__all__ = ["CacheAware", "InPoolPolicy", "PowerOfTwo", "RoundRobin", "ShortestQueue", "build_in_pool"]
