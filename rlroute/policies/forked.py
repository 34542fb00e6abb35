"""References that fork the simulator at every decision (not deployable; simulator only).

* :class:`RewardOracle` (``reward_oracle``): the hindsight upper reference. Per request, the action whose
  fork scores the best per-request reward, with the quality term the evaluator scores (the env's
  ``reward.quality``: choosing by the realised ``ok`` while the episode is scored by ``p`` made the oracle
  lose to policies that never saw an outcome) and, with ``horizon > 0``, hindsight of the next arrivals
  (when and what arrives) so that its choice is charged the queueing it causes them. The quality
  oracle (``quality_oracle``, :mod:`rlroute.policies.oracle`) is a different thing: the cheapest acceptable
  answer, ignoring load and latency.
* :class:`LookAhead` (``lookahead``): a model-predictive router: the same forks with the *expected*
  quality (``p``), i.e. what a router with a perfect simulator but no hindsight of the answer could
  achieve. Under ``reward.quality: p`` it is the same policy as the reward oracle at the same horizon.

Both read the env (cluster, pending request and its quality draw, reward config, next arrivals) through ``bind_env``,
which the evaluator (:func:`rlroute.eval.run.run_episode`) calls after each ``reset``; how forks are scored
and how later arrivals are treated (``horizon``) is in :mod:`rlroute.policies.whatif`. Ties go to the
cheaper action (small < hybrid < large).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import COST_ORDER
from rlroute.policies.whatif import WhatIf
from rlroute.types import Action


class ForkPolicy(Policy):
    """Pick the allowed action with the best what-if reward (see :class:`~rlroute.policies.whatif.WhatIf`).

    Args:
        horizon: later arrivals simulated in each fork (0 = none; see :mod:`rlroute.policies.whatif`).
        rule: policy routing those later arrivals (registry name).
    """

    name = "fork"
    quality = "ok"

    def __init__(self, horizon: int = 0, rule: str = "heuristic") -> None:
        self.whatif = WhatIf(self.quality, horizon, rule)
        self.last_rewards = np.full(3, np.nan)

    def bind_env(self, env: Any) -> None:
        """Fork ``env``'s cluster at each decision (the evaluator calls this after ``reset``)."""
        self.whatif.bind(env)

    def reset(self, rng: np.random.Generator) -> None:
        """Deterministic; nothing to forget."""

    def act(self, ctx: DecisionContext) -> Action:
        """The best-scoring allowed action; ``last_rewards`` keeps the per-action scores."""
        r = self.whatif.rewards(ctx)
        self.last_rewards = r
        if np.all(np.isnan(r)):
            raise RuntimeError(f"{self.name}: no action is allowed for request {ctx.request.id}")
        best = np.nanmax(r)
        return next(a for a in COST_ORDER if r[a] == best)


class RewardOracle(ForkPolicy):
    """Hindsight reward oracle: the reward's own quality term + the fork's billed cost, latency and SLO (of
    the request and, with ``horizon``, of the next arrivals, which it knows in hindsight)."""

    name = "reward_oracle"
    quality = "reward"


class LookAhead(ForkPolicy):
    """One-step look-ahead: expected quality (``p``) + the fork's billed cost, latency and SLO."""

    name = "lookahead"
    quality = "p"
