"""The ``QualityModel`` interface: per request and action, the probability of an acceptable answer."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from rlroute.types import QualityDraw, Request


@runtime_checkable
class QualityModel(Protocol):
    """Probability that each action's answer is acceptable, and a sampled, internally consistent draw."""

    def probs(self, request: Request) -> tuple[float, float, float]:
        """P(acceptable) for large, small, hybrid."""
        ...

    def draw(self, request: Request, rng: np.random.Generator) -> QualityDraw:
        """Sample the outcomes of all three actions jointly (used by the env and the hindsight oracle)."""
        ...
