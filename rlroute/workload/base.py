"""The ``Workload`` interface: a source of typed :class:`~rlroute.types.Request` records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from rlroute.types import Request


class WorkloadError(ValueError):
    """A malformed input row; the message names the file and line."""


@runtime_checkable
class Workload(Protocol):
    """Yields requests in arrival order. All randomness comes from ``rng`` (same seed, same stream)."""

    name: str

    def requests(self, rng: np.random.Generator) -> Iterator[Request]:
        """Iterate requests in non-decreasing arrival time."""
        ...
