"""Hand-written routing rules: the seed's heuristic (also the router's fallback) and cache-aware routing.

Both read typed fields only (request, :class:`~rlroute.cluster.base.ClusterState`, prefix matches), never
the observation vector, so they keep working when the feature schema or a learned policy is in doubt —
which is exactly when the serving router falls back to :class:`SeedHeuristic`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import allowed_actions, cache_score, choose_allowed, pool_load
from rlroute.types import Action, Request

ComplexityFn = Callable[[Request], float]


def _default_complexity() -> ComplexityFn:
    # Imported on first use: rlroute.features owns the score (one definition for env, eval and server).
    from rlroute.features import complexity

    return complexity


class SeedHeuristic(Policy):
    """The seed's rule: complexity > 0.7 → large; otherwise small, unless the large pool's cache score
    exceeds the small pool's by more than 0.3 (then large, to reuse its prefix cache).

    Cache score = best prefix-match ratio over the pool's serving instances
    (:func:`rlroute.policies.common.cache_score`). The result always respects ``ctx.mask`` and pool
    availability (large down → small; small down → large).

    Args:
        complexity_threshold: complexity above which the request goes to the large pool.
        cache_margin: how much better the large pool's cache score must be to win a simple request.
        complexity_fn: the complexity score in [0, 1]; default :func:`rlroute.features.complexity`.
    """

    name = "heuristic"

    def __init__(
        self,
        complexity_threshold: float = 0.7,
        cache_margin: float = 0.3,
        complexity_fn: ComplexityFn | None = None,
    ) -> None:
        if not 0.0 <= complexity_threshold <= 1.0:
            raise ValueError(f"heuristic.complexity_threshold: expected a value in [0, 1], got {complexity_threshold}")
        self.complexity_threshold = complexity_threshold
        self.cache_margin = cache_margin
        self._complexity = complexity_fn

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def preferred(self, ctx: DecisionContext) -> Action:
        """The rule's choice before availability is applied."""
        if self._complexity is None:
            self._complexity = _default_complexity()
        if self._complexity(ctx.request) > self.complexity_threshold:
            return Action.LARGE
        if cache_score(ctx, "large") - cache_score(ctx, "small") > self.cache_margin:
            return Action.LARGE
        return Action.SMALL

    def act(self, ctx: DecisionContext) -> Action:
        """The rule's choice, moved to the other pool when its pool cannot serve."""
        return choose_allowed(self.preferred(ctx), ctx)


class CacheAwarePolicy(Policy):
    """Pool choice by prefix affinity and load: SGLang router's cache_aware rule lifted to pools.

    1. If the pools are imbalanced — mean per-instance load (queued + running) differs by more than
       ``balance_abs`` and the busier pool carries more than ``balance_rel`` × the other's — take the
       less-loaded pool (shortest queue).
    2. Else, if some pool's best prefix-match ratio reaches ``cache_threshold``, take the pool with the
       best match (ties → small, the cheaper pool).
    3. Else take the less-loaded pool (ties → small).

    The defaults mirror the in-pool rule's CLI defaults in DESIGN.md (0.3 / 1.5); ``balance_abs`` is in
    requests per instance, not per pool, so it is smaller than the router's 64 (which counts a worker's
    whole queue).

    Args:
        cache_threshold: match ratio at which cache affinity decides.
        balance_abs: absolute per-instance load gap that counts as imbalance.
        balance_rel: relative load ratio that counts as imbalance.
    """

    name = "cache_aware"

    def __init__(self, cache_threshold: float = 0.3, balance_abs: float = 8.0, balance_rel: float = 1.5) -> None:
        if not 0.0 <= cache_threshold <= 1.0:
            raise ValueError(f"cache_aware.cache_threshold: expected a value in [0, 1], got {cache_threshold}")
        if balance_abs < 0 or balance_rel < 1.0:
            raise ValueError(
                f"cache_aware: expected balance_abs >= 0 and balance_rel >= 1, got {balance_abs}, {balance_rel}"
            )
        self.cache_threshold = cache_threshold
        self.balance_abs = balance_abs
        self.balance_rel = balance_rel

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        """Large or small by the three rules above (never hybrid)."""
        mask = allowed_actions(ctx)
        if not mask[Action.LARGE]:
            return choose_allowed(Action.SMALL, ctx)
        if not mask[Action.SMALL]:
            return choose_allowed(Action.LARGE, ctx)
        load_l, load_s = pool_load(ctx, "large"), pool_load(ctx, "small")
        lo, hi = min(load_l, load_s), max(load_l, load_s)
        less_loaded = Action.LARGE if load_l < load_s else Action.SMALL
        if hi - lo > self.balance_abs and hi > self.balance_rel * lo:
            return less_loaded
        cache_l, cache_s = cache_score(ctx, "large"), cache_score(ctx, "small")
        if max(cache_l, cache_s) >= self.cache_threshold:
            return Action.LARGE if cache_l > cache_s else Action.SMALL
        return less_loaded
