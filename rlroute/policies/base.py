"""One ``Policy`` interface for the env's baselines, the evaluator and the serving router.

A policy sees a :class:`DecisionContext`: the request, the typed cluster state, the prefix matches and
the 224-dim observation computed from them by :mod:`rlroute.features` (the same vector a learned policy
sees). Hand-written policies may read the typed fields; learned ones read ``obs``. Only the hindsight
oracle reads ``request.quality``; it exists in the simulator alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.types import Action, Credit, FloatArray, Request


@dataclass(slots=True)
class DecisionContext:
    """Everything known at the moment of one routing decision."""

    request: Request
    state: ClusterState
    matches: dict[str, list[int]]  # matched prompt tokens per instance, per pool
    obs: FloatArray  # the 224-dim feature vector (rlroute.features)
    mask: np.ndarray | None = None  # bool[3], True where the action is allowed


class Policy:
    """Maps a decision context to an action. Every routing policy subclasses this; :meth:`act` is required,
    every other hook has a default, so the env, the evaluator and the router call them without probing.

    Hooks (the evaluator calls them in this order):

    * :meth:`prepare` — once before evaluation, with the composed config (the threshold router trains or
      loads its classifier here, on the workload's *train* split).
    * :meth:`reset` — at the start of every episode.
    * :meth:`bind_env` — after each env ``reset``, with the env: the simulator references fork its
      cluster at every decision; the quality oracle prices actions as the env does.
    * :meth:`act` — each decision; :meth:`score` beside it.
    * :meth:`observe` — after each step with the credits of the requests that completed in it (online
      learners update when a request completes).
    """

    name: str = "policy"
    fallbacks: Counter[str] | None = None  # decisions a guard refused and a fallback made, by reason (None: no guard)

    def act(self, ctx: DecisionContext) -> Action:
        """Choose large, small or hybrid for ``ctx.request``."""
        raise NotImplementedError(f"{type(self).__name__}.act")

    def reset(self, rng: np.random.Generator) -> None:
        """Forget per-episode state; take randomness from ``rng`` only (default: stateless)."""

    def prepare(self, cfg: Any) -> None:
        """Fit or load what the policy needs from the composed config, once before evaluation (default:
        nothing to prepare)."""

    def score(self, ctx: DecisionContext) -> float:
        """The policy's propensity to need the large model: the evaluator records it per request and runs
        RouteLLM's threshold sweep (APGR / CPT) over it. NaN (the default): no score, one operating point."""
        return math.nan

    def bind_env(self, env: Any) -> None:
        """See the env (a :class:`~rlroute.env.routing.RoutingEnv`, possibly wrapped) after each ``reset``
        (default: not needed)."""

    def observe(self, credits: Iterable[Credit]) -> None:
        """The credits of the requests that completed in the last step (default: not learning online)."""
