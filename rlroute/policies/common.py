"""Helpers every hand-written policy shares: which actions are allowed now, pool cache scores and load.

The env passes ``ctx.mask`` (True where the action is allowed); the serving router may not, so the mask is
derived from pool availability when it is absent: large needs the large pool, small the small pool and
hybrid both (it plans on the large pool and executes on the small one).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rlroute.policies.base import DecisionContext
from rlroute.types import Action

# Cheapest first. Hybrid's large-model part is a short plan, so it costs between small and large.
COST_ORDER: tuple[Action, Action, Action] = (Action.SMALL, Action.HYBRID, Action.LARGE)

# When the preferred action is not allowed: what to fall back to, in order. The large pool being down
# leaves small as the only choice; the small pool being down makes large the only one.
_FALLBACKS: dict[Action, tuple[Action, ...]] = {
    Action.LARGE: (Action.LARGE, Action.SMALL, Action.HYBRID),
    Action.SMALL: (Action.SMALL, Action.LARGE, Action.HYBRID),
    Action.HYBRID: (Action.HYBRID, Action.LARGE, Action.SMALL),
}


def allowed_actions(ctx: DecisionContext) -> np.ndarray:
    """Boolean ``[3]`` mask of the actions allowed for ``ctx``.

    Uses ``ctx.mask`` when given (and also drops pools that the state marks unavailable, so a stale
    mask cannot send traffic to a paused pool); otherwise derives it from ``ctx.state``.
    """
    pools = ctx.state.pools
    large = pools["large"].available if "large" in pools else False
    small = pools["small"].available if "small" in pools else False
    derived = np.array([large, small, large and small], dtype=bool)
    if ctx.mask is None:
        return derived
    mask = np.asarray(ctx.mask, dtype=bool)
    if mask.shape != (3,):
        raise ValueError(f"DecisionContext.mask: expected a bool array of shape (3,), got shape {mask.shape}")
    return mask & derived


def choose_allowed(preferred: Action, ctx: DecisionContext) -> Action:
    """``preferred`` if allowed, else the first allowed action of its fallback order.

    When nothing is allowed (every pool down) the preference is returned unchanged: no choice is better,
    and the cluster reports the failure.
    """
    mask = allowed_actions(ctx)
    for action in _FALLBACKS[preferred]:
        if mask[int(action)]:
            return action
    return preferred


def first_allowed(order: Iterable[Action], ctx: DecisionContext) -> Action | None:
    """The first action of ``order`` that is allowed, or ``None``."""
    mask = allowed_actions(ctx)
    for action in order:
        if mask[int(action)]:
            return action
    return None


def cache_score(ctx: DecisionContext, pool: str) -> float:
    """Best prefix-match ratio over the pool's serving instances (matched tokens / prompt tokens).

    Instances that are unhealthy or paused are skipped where the state lists them (their cache cannot
    serve the request now). 0 when the pool has no match information or the prompt is empty.
    """
    matched = ctx.matches.get(pool) or []
    if not matched or ctx.request.input_len <= 0:
        return 0.0
    instances = ctx.state.pools[pool].instances if pool in ctx.state.pools else []
    serving = {i.index for i in instances if i.healthy and not i.paused}
    usable = [m for k, m in enumerate(matched) if not instances or k in serving]
    if not usable:
        return 0.0
    return min(1.0, max(usable) / ctx.request.input_len)


def pool_load(ctx: DecisionContext, pool: str) -> float:
    """Mean queued + running requests per serving instance; ``inf`` when the pool cannot serve."""
    if pool not in ctx.state.pools:
        return float("inf")
    serving = [i for i in ctx.state.pools[pool].instances if i.healthy and not i.paused]
    if not serving:
        return float("inf")
    return sum(i.queued + i.running for i in serving) / len(serving)


def strong_score(probs: np.ndarray, mask: np.ndarray | None = None) -> float:
    """A learned policy's score for RouteLLM's threshold sweep: P(large) + P(hybrid) (both call the strong
    model), from its action probabilities renormalised over the allowed actions (``mask``; all if None)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if mask is not None:
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if m.any():
            p = np.where(m, p, 0.0)
    total = float(p.sum())
    if not total > 0.0 or not np.isfinite(total):
        return float("nan")
    return float((p[Action.LARGE] + p[Action.HYBRID]) / total)
