"""The quality oracle (``quality_oracle``): the hindsight bound of quality-per-cost routing.

Not the reward-maximising reference: that is ``reward_oracle`` (:mod:`rlroute.policies.forked`), which
also sees latency and SLO outcomes by forking the simulator.

It reads ``request.quality`` — the outcome of every action, drawn once when the request was materialised
(simulator only) — and picks the cheapest action whose answer is acceptable; when none is acceptable it
sends the request to the large pool (the best guess a router without hindsight would also make).

"Cheapest" is, by default, the fixed order small < hybrid < large (hybrid's large-model part is a short
plan). When the evaluator binds the env (:meth:`HindsightOracle.bind_env`), the oracle instead prices each
action as the env's reward does at decision time — which matters on input-heavy traces, where hybrid
prefills the whole prompt on the large pool *and* the small one and so costs more than large. It ignores
load and latency, so it bounds quality and model cost, not latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import COST_ORDER, choose_allowed, first_allowed
from rlroute.types import Action, Request

PriceFn = Callable[[Request, Action], float]


class HindsightOracle(Policy):
    """Cheapest acceptable action, else large.

    Args:
        use_hybrid: consider hybrid as a candidate (default True); False gives the two-pool oracle of
            RouteLLM's "optimal" router.
        priced: order candidates by the bound env's decision-time price when one is bound (default True);
            False keeps the fixed order small < hybrid < large.
        price_fn: an explicit ``(request, action) -> cost`` (tests, live pools); overrides the env's.
    """

    name = "quality_oracle"

    def __init__(self, use_hybrid: bool = True, priced: bool = True, price_fn: PriceFn | None = None) -> None:
        self.use_hybrid = use_hybrid
        self.priced = priced
        self._price = price_fn

    def bind_env(self, env: Any) -> None:
        """Price actions as ``env`` does (:meth:`rlroute.env.routing.RoutingEnv.expected_cost`)."""
        if self.priced and self._price is None:
            self._price = getattr(env, "unwrapped", env).expected_cost  # through Gymnasium's wrappers

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        """Cheapest allowed action whose drawn outcome is acceptable; large when none is."""
        draw = ctx.request.quality
        if draw is None:
            raise ValueError(
                f"quality_oracle: request {ctx.request.id} has no quality draw (request.quality is None); the "
                "hindsight oracle needs the simulator's per-action outcomes"
            )
        order = [a for a in COST_ORDER if self.use_hybrid or a != Action.HYBRID]
        acceptable = [a for a in order if draw.ok[int(a)]]
        if self.priced and self._price is not None and len(acceptable) > 1:
            price = self._price
            # Stable sort: equal prices keep the fixed order.
            acceptable.sort(key=lambda a: float(price(ctx.request, a)))
        chosen = first_allowed(acceptable, ctx)
        return chosen if chosen is not None else choose_allowed(Action.LARGE, ctx)
