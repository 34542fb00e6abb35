"""Confidence intervals: Student-t over seeds (the default) and a percentile bootstrap over requests.

Seeds are the independent replicates of an evaluation (each seed is a fresh workload stream, quality
draw and cluster), so the t-interval over per-seed metrics is the honest default. Requests inside one
episode are correlated through the shared cluster state, so the bootstrap over requests is offered as an
option and is narrower than it should be; it is labelled as such in reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, slots=True)
class Interval:
    """A mean and its confidence interval; ``n`` is the number of replicates behind it."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN when undefined, e.g. one replicate)."""
        return (self.high - self.low) / 2.0

    def fmt(self, digits: int = 3) -> str:
        """``mean ± half-width`` (or just the mean when the interval is undefined)."""
        if not np.isfinite(self.mean):
            return "n/a"
        mean = round(self.mean, digits) + 0.0  # no "-0.000"
        if not np.isfinite(self.half_width):
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def as_dict(self) -> dict[str, float | int]:
        """JSON-friendly form."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` (NaNs dropped; one value → degenerate interval).

    Args:
        values: one metric value per seed.
        confidence: two-sided coverage, e.g. 0.95.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def bootstrap_interval(
    n_items: int,
    statistic: Callable[[np.ndarray], float],
    rng: np.random.Generator,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> Interval:
    """Percentile bootstrap of ``statistic(indices)`` over ``n_items`` resampled with replacement.

    Args:
        n_items: how many items (requests) there are.
        statistic: maps an index array into the items to the metric.
        rng: randomness for the resamples.
        n_boot: resamples.
        confidence: two-sided coverage.
    """
    if n_items == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    point = float(statistic(np.arange(n_items)))
    draws = np.array([statistic(rng.integers(0, n_items, n_items)) for _ in range(n_boot)], dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return Interval(point, float("nan"), float("nan"), n_items)
    lo, hi = np.quantile(draws, [0.5 - confidence / 2.0, 0.5 + confidence / 2.0])
    return Interval(point, float(lo), float(hi), n_items)
