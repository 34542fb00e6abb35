"""The env's warm-up (``RoutingEnv(warmup=N)``): pools filled as a long-running router's are, before the
first decision of an episode.

A served router runs for hours; its pools' queues, KV usage and prefix caches are those of a steady state,
while an episode that starts from empty pools shows the policy (and the OOD guard's training statistics)
only the first minutes after a cold start. The warm-up routes the episode's first requests with the seed
heuristic — the router's fallback, since the policy under training is not known inside the env (an
assumption stated in :class:`~rlroute.env.routing.RoutingEnv`'s docstring) — through the episode's own
cluster, so the decisions that follow see warm pools.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rlroute.cluster.base import Cluster, action_mask
from rlroute.policies.base import DecisionContext
from rlroute.types import Request

_NO_OBS = np.zeros(0, dtype=np.float32)  # the seed heuristic reads typed fields, never the observation


def warm_up(cluster: Cluster, first: Request, n: int, stream: Iterator[Request], warm_ids: set[int],
            limit: int) -> Request:
    """Route ``first`` and the next ``n - 1`` requests of ``stream`` with the seed heuristic, each at its
    arrival; their ids go into ``warm_ids`` (the env drops their completions). Returns the next request of
    the stream: the episode's first decision.

    Raises:
        ValueError: the stream ended during the warm-up (``limit`` is the env's ``warmup``, for the message).
    """
    from rlroute.policies.heuristic import SeedHeuristic

    rule = SeedHeuristic()
    mask = np.ones(3, dtype=bool)
    req: Request | None = first
    for _ in range(n):
        if req is None:
            break
        cluster.advance(req.arrival)  # only warm-up requests are in flight: nothing to pay
        state = cluster.state()
        action_mask(state, mask)
        cluster.submit(req, rule.act(DecisionContext(req, state, cluster.prefix_match(req), _NO_OBS, mask)))
        warm_ids.add(req.id)
        req = next(stream, None)  # raw: warm-up requests need no quality draw
    if req is None:
        raise ValueError(f"the workload ended during the env's warm-up ({n} requests, warmup={limit}): "
                         "lower env.warmup or lengthen the stream")
    return req
