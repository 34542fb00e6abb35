"""The hindsight oracle: the upper bound of quality-per-cost routing.

It reads ``request.quality`` — the outcome of every action, drawn once when the request was materialised
(simulator only) — and picks the cheapest action whose answer is acceptable, in the order small < hybrid <
large (hybrid's large-model part is a short plan, so it costs between the two). When no action is
acceptable it sends the request to the large pool (the best guess a router without hindsight would also
make). It ignores load and cache, so it bounds quality and model cost, not latency.
"""

from __future__ import annotations

import numpy as np

from rlroute.policies.base import DecisionContext
from rlroute.policies.common import COST_ORDER, choose_allowed, first_allowed
from rlroute.types import Action


class HindsightOracle:
    """Cheapest acceptable action, else large.

    Args:
        use_hybrid: consider hybrid as a candidate (default True); False gives the two-pool oracle of
            RouteLLM's "optimal" router.
    """

    name = "oracle"

    def __init__(self, use_hybrid: bool = True) -> None:
        self.use_hybrid = use_hybrid

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        """Cheapest allowed action whose drawn outcome is acceptable; large when none is."""
        draw = ctx.request.quality
        if draw is None:
            raise ValueError(
                f"oracle: request {ctx.request.id} has no quality draw (request.quality is None); the "
                "hindsight oracle needs the simulator's per-action outcomes"
            )
        order = [a for a in COST_ORDER if self.use_hybrid or a != Action.HYBRID]
        acceptable = [a for a in order if draw.ok[int(a)]]
        chosen = first_allowed(acceptable, ctx)
        return chosen if chosen is not None else choose_allowed(Action.LARGE, ctx)
