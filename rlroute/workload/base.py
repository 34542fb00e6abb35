"""The ``Workload`` interface: a source of typed :class:`~rlroute.types.Request` records, and test windows.

A :class:`Window` ``(index, count)`` cuts a split into ``count`` disjoint, contiguous parts and keeps part
``index``: "test seed i" of a study is window ``i`` of the test split (``rlroute.eval.run.evaluate`` with
``windows=``). What a part is depends on the source: for trace timing, a contiguous time window of the
split's rows (no wrap-around); for a prompt set, a contiguous block of the split's prompt list (which the
prompt set has already shuffled with its split seed), so no prompt is in two windows; generated arrivals
(Poisson, gamma, diurnal) are drawn from the episode's seed, which differs per window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from rlroute.types import Request


class WorkloadError(ValueError):
    """A malformed input row; the message names the file and line."""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Window:
    """Part ``index`` of ``count`` disjoint, contiguous parts of a split (module doc)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"window: expected 0 <= index < count, got index={self.index}, count={self.count}")

    def bounds(self, lo: int, hi: int, what: str = "items") -> tuple[int, int]:
        """The sub-range ``[a, b)`` of ``[lo, hi)`` this window keeps (parts differ in size by at most one)."""
        n = hi - lo
        if n < self.count:
            raise ValueError(f"window: {n} {what} cannot be cut into {self.count} non-empty windows")
        return lo + (self.index * n) // self.count, lo + ((self.index + 1) * n) // self.count

    def take(self, items: Sequence[T], what: str = "items") -> Sequence[T]:
        """This window's contiguous part of ``items`` (a lazy view: lazily generated pools stay lazy)."""
        a, b = self.bounds(0, len(items), what)
        return _View(items, a, b)


class _View(Sequence[T]):
    def __init__(self, items: Sequence[T], lo: int, hi: int) -> None:
        self.items, self.lo, self.hi = items, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.items[self.lo + index % len(self)]


@runtime_checkable
class Workload(Protocol):
    """Yields requests in arrival order. All randomness comes from ``rng`` (same seed, same stream)."""

    name: str

    def requests(self, rng: np.random.Generator, window: Window | None = None) -> Iterator[Request]:
        """Iterate requests in non-decreasing arrival time; ``window`` keeps one disjoint part of the split
        (module doc; a workload that cannot cut its split raises ``ValueError`` saying so)."""
        ...
