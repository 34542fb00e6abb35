"""One ``Policy`` interface for the env's baselines, the evaluator and the serving router.

A policy sees a :class:`DecisionContext`: the request, the typed cluster state, the prefix matches and
the 224-dim observation computed from them by :mod:`rlroute.features` (the same vector a learned policy
sees). Hand-written policies may read the typed fields; learned ones read ``obs``. Only the hindsight
oracle reads ``request.quality``; it exists in the simulator alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.types import Action, FloatArray, Request


@dataclass(slots=True)
class DecisionContext:
    """Everything known at the moment of one routing decision."""

    request: Request
    state: ClusterState
    matches: dict[str, list[int]]  # matched prompt tokens per instance, per pool
    obs: FloatArray  # the 224-dim feature vector (rlroute.features)
    mask: np.ndarray | None = None  # bool[3], True where the action is allowed


@runtime_checkable
class Policy(Protocol):
    """Maps a decision context to an action."""

    name: str

    def act(self, ctx: DecisionContext) -> Action:
        """Choose large, small or hybrid for ``ctx.request``."""
        ...

    def reset(self, rng: np.random.Generator) -> None:
        """Forget per-episode state; take randomness from ``rng`` only."""
        ...
