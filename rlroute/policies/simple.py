"""Context-free baselines: random, round-robin between pools, the three fixed policies, and the one-knob
prompt-length cut.

The first five ignore the request and the cluster except for which actions are allowed (``ctx.mask`` / pool
availability), so they are the floor every routing policy must clear and the anchors of the cost–quality
plane (all-small and all-large define PGR 0 and 1). :class:`LengthCut` reads one number of the request, its
prompt length: the part of a request's large-model price under token prices that is known at decision time
(the reply, the larger part on chat traffic, is not).
"""

from __future__ import annotations

import numpy as np

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import allowed_actions, choose_allowed
from rlroute.types import Action


class RandomPolicy(Policy):
    """Uniform over the allowed actions (or over ``actions`` when given, e.g. ``[0, 1]`` for pools only).

    Args:
        actions: action indices to draw from; default all three.
        p: optional probabilities for ``actions`` (renormalised over the allowed ones).
    """

    name = "random"

    def __init__(self, actions: list[int] | None = None, p: list[float] | None = None) -> None:
        self.actions = [Action(a) for a in (actions if actions is not None else (0, 1, 2))]
        if not self.actions:
            raise ValueError("RandomPolicy.actions: expected at least one action index in {0, 1, 2}")
        if p is not None and (len(p) != len(self.actions) or min(p) < 0 or sum(p) <= 0):
            raise ValueError(f"RandomPolicy.p: expected {len(self.actions)} non-negative weights, got {p}")
        self.p = np.asarray(p if p is not None else [1.0] * len(self.actions), dtype=float)
        self._rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        """Take the draw stream from ``rng`` (same seed, same decisions)."""
        self._rng = rng

    def act(self, ctx: DecisionContext) -> Action:
        """Draw an allowed action."""
        mask = allowed_actions(ctx)
        ok = np.array([mask[int(a)] for a in self.actions])
        if not ok.any():
            return choose_allowed(self.actions[0], ctx)
        w = self.p * ok
        k = int(self._rng.choice(len(self.actions), p=w / w.sum()))
        return self.actions[k]


class RoundRobinPolicy(Policy):
    """Alternates between the pools (large, small, large, …), skipping a pool that cannot serve.

    Args:
        order: the cycle of action indices; default ``[0, 1]`` (round-robin between the two pools).
    """

    name = "round_robin"

    def __init__(self, order: list[int] | None = None) -> None:
        self.order = [Action(a) for a in (order if order is not None else (0, 1))]
        if not self.order:
            raise ValueError("RoundRobinPolicy.order: expected at least one action index")
        self._next = 0

    def reset(self, rng: np.random.Generator) -> None:
        """Restart the cycle."""
        self._next = 0

    def act(self, ctx: DecisionContext) -> Action:
        """Next pool in the cycle that is allowed."""
        mask = allowed_actions(ctx)
        for step in range(len(self.order)):
            action = self.order[(self._next + step) % len(self.order)]
            if mask[int(action)]:
                self._next = (self._next + step + 1) % len(self.order)
                return action
        self._next = (self._next + 1) % len(self.order)
        return choose_allowed(self.order[0], ctx)


class FixedPolicy(Policy):
    """Always the same action, falling back (see :func:`choose_allowed`) when it is not allowed.

    Args:
        action: 0 large, 1 small, 2 hybrid.
    """

    name = "fixed"

    def __init__(self, action: int) -> None:
        try:
            self.action = Action(action)
        except ValueError as exc:
            raise ValueError(f"FixedPolicy.action: expected 0 (large), 1 (small) or 2 (hybrid), got {action!r}") from exc

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        """The fixed action, or its fallback."""
        return choose_allowed(self.action, ctx)


class AllLarge(FixedPolicy):
    """Every request to the large pool (PGR 1 by construction; the cost reference)."""

    name = "all_large"

    def __init__(self) -> None:
        super().__init__(Action.LARGE)


class AllSmall(FixedPolicy):
    """Every request to the small pool (PGR 0 by construction)."""

    name = "all_small"

    def __init__(self) -> None:
        super().__init__(Action.SMALL)


class AllHybrid(FixedPolicy):
    """Every request planned by the large model and executed by the small one."""

    name = "all_hybrid"

    def __init__(self) -> None:
        super().__init__(Action.HYBRID)


class LengthCut(Policy):
    """Large for prompts on one side of a length cut, small for the rest: the price rule a token-priced
    deployment would write first (the large call's input price grows with the prompt; on a trace without text
    the prompt's length is also what the threshold rule's classifier cannot see). The study tunes ``cut_tokens`` and ``large_when``
    on val like the threshold rule's share (``rlroute.study.runner.tuned_length_cut``).

    Why it is a baseline: on the azure_code trace (no text; latent difficulty planted on the length) PPO
    trained on the workload and a ridge regression of the 224 features both learned what this rule tuned on
    val does better (``experiments/scenarios/README.md``, "What limits the learned routers").

    Args:
        cut_tokens: prompt tokens (``request.input_len``) at the cut.
        large_when: ``"short"`` sends prompts of at most ``cut_tokens`` to the large pool, ``"long"`` those
            above it.
    """

    name = "length_cut"

    def __init__(self, cut_tokens: float = 512.0, large_when: str = "short") -> None:
        if not cut_tokens >= 0:
            raise ValueError(f"length_cut.cut_tokens: expected a token count >= 0, got {cut_tokens!r}")
        if large_when not in ("short", "long"):
            raise ValueError(f"length_cut.large_when: expected 'short' or 'long', got {large_when!r}")
        self.cut_tokens = float(cut_tokens)
        self.large_when = large_when

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        """Large on the cut's large side (moved when the pool cannot serve), small otherwise."""
        short = ctx.request.input_len <= self.cut_tokens
        return choose_allowed(Action.LARGE if short == (self.large_when == "short") else Action.SMALL, ctx)
