"""Confidence intervals and paired comparisons.

* :func:`t_interval`: Student-t over per-seed values (the default of ``rlroute eval``).
* :func:`bootstrap_interval`: percentile bootstrap of a statistic over items (requests); requests in one
  episode are correlated through the shared cluster state, so this is optimistic and labelled as such.
* :func:`cluster_bootstrap`: the same, resampling whole clusters (a test window, or a prompt where prompts
  repeat), so correlation inside a cluster widens the interval as it should.
* :func:`paired_bootstrap`: the study's paired comparison of two policies on the same test windows.
  Values are matrices ``[training seed, test window]`` (a non-learned policy has one row). The per-window
  value of a learned policy is the mean over its training seeds. The interval treats *both* sources of
  variance as random: every resample draws the test windows with replacement (the same draw for both
  policies: pairing) and, independently, each policy's training seeds with replacement; the statistic is
  the mean over the drawn windows of (mean over drawn training seeds of A) − (same for B); the interval is
  the percentile interval of the resamples. This two-way (crossed) bootstrap answers "would re-training
  *and* new traffic keep the sign", not only "do these trained weights win on new windows"; it counts
  the seed × window interaction in both terms and is therefore slightly conservative (McCullagh, 2000,
  "Resampling and exchangeable arrays", Bernoulli 6(2)). With 10 windows a percentile interval under-covers
  a little (91 % coverage of a nominal 95 % interval in the null simulation of ``tests/test_eval_stats.py``,
  1,000 replications).
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
    clusters: Sequence[object] | np.ndarray | None = None,
) -> Interval:
    """Percentile bootstrap of ``statistic(indices)`` over ``n_items`` resampled with replacement.

    Args:
        n_items: how many items (requests) there are.
        statistic: maps an index array into the items to the metric.
        rng: randomness for the resamples.
        n_boot: resamples.
        confidence: two-sided coverage.
        clusters: one label per item (e.g. the test window): whole clusters are resampled, and ``n`` of the
            result is the number of clusters; ``None`` resamples items.
    """
    if n_items == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    point = float(statistic(np.arange(n_items)))
    if clusters is None:
        draws = np.array([statistic(rng.integers(0, n_items, n_items)) for _ in range(n_boot)], dtype=np.float64)
        return _percentile(point, draws, n_items, confidence)
    labels = np.asarray(clusters).astype(str)
    if labels.shape != (n_items,):
        raise ValueError(f"bootstrap_interval: expected one cluster label per item ({n_items}), got {labels.shape}")
    _, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(int(inverse.max()) + 1)]
    k = len(members)
    draws = np.array([statistic(np.concatenate([members[c] for c in rng.integers(0, k, k)]))
                      for _ in range(n_boot)], dtype=np.float64)
    return _percentile(point, draws, k, confidence)


def _check(confidence: float, n_boot: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected >= 1 resamples, got {n_boot}")


def _percentile(point: float, draws: np.ndarray, n: int, confidence: float) -> Interval:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0 or n < 2:
        return Interval(point, float("nan"), float("nan"), n)
    lo, hi = np.quantile(draws, [0.5 - confidence / 2.0, 0.5 + confidence / 2.0])
    return Interval(point, float(lo), float(hi), n)


def cluster_bootstrap(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> Interval:
    """Percentile interval of the mean of ``values`` resampling whole ``clusters`` with replacement.

    For request-level paired differences (``reward_A(r) − reward_B(r)`` on the same request ``r``) with
    ``clusters`` the request's prompt (or its test window): a prompt that repeats contributes all of its
    requests together, so repeats do not pass for independent evidence. ``n`` is the number of clusters.

    Args:
        values: one value per item (NaNs are an error: they would silently change the weights).
        clusters: one hashable label per item.
        rng: randomness of the resamples.
        n_boot: resamples.
        confidence: two-sided coverage.
    """
    _check(confidence, n_boot)
    x = np.asarray(values, dtype=np.float64)
    labels = np.asarray(clusters, dtype=object) if not isinstance(clusters, np.ndarray) else clusters
    if x.ndim != 1 or labels.shape != x.shape:
        raise ValueError(f"cluster_bootstrap: expected values and clusters of one equal length, got "
                         f"{x.shape} and {labels.shape}")
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if not np.isfinite(x).all():
        raise ValueError("cluster_bootstrap: values contain NaN/inf; drop or fill them explicitly first")
    _, inverse = np.unique(labels.astype(str), return_inverse=True)
    sums = np.bincount(inverse, weights=x)
    counts = np.bincount(inverse).astype(np.float64)
    k = sums.size
    pick = rng.integers(0, k, size=(n_boot, k))
    draws = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    return _percentile(float(x.mean()), draws, k, confidence)


def _as_matrix(values: Sequence[Sequence[float]] | Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"{name}: expected a [training seed, test window] matrix or one row per window, "
                         f"got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name}: contains NaN/inf (a run that produced no value must be re-run, not dropped)")
    return m


def paired_bootstrap(
    a: Sequence[Sequence[float]] | Sequence[float] | np.ndarray,
    b: Sequence[Sequence[float]] | Sequence[float] | np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    n_boot: int = 4000,
    confidence: float = 0.95,
) -> Interval:
    """Mean of ``a − b`` per test window with the two-way bootstrap of the module doc (``b=None``: ``a``'s
    own mean and interval).

    Args:
        a: ``[training seed, test window]`` values (one row for a non-learned policy).
        b: the same for the policy compared against, on the same windows (columns pair up), or ``None``.
        rng: randomness of the resamples (default: a fixed seed, so reports are reproducible).
        n_boot: resamples.
        confidence: two-sided coverage.

    Returns:
        The point estimate (mean over windows of the training-seed means' difference) and its percentile
        interval; ``n`` is the number of test windows.
    """
    _check(confidence, n_boot)
    rng = rng if rng is not None else np.random.default_rng(0)
    ma = _as_matrix(a, "a")
    mb = _as_matrix(b, "b") if b is not None else np.zeros((1, ma.shape[1]))
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"paired comparison needs the same test windows: a has {ma.shape[1]}, b has "
                         f"{mb.shape[1]}")
    n = ma.shape[1]
    point = float((ma.mean(axis=0) - mb.mean(axis=0)).mean())
    w = _weights(rng, n_boot, n)
    diff = _seed_weights(rng, n_boot, ma.shape[0]) @ ma - _seed_weights(rng, n_boot, mb.shape[0]) @ mb
    draws = (diff * w).sum(axis=1)
    return _percentile(point, draws, n, confidence)


def _weights(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """Resampling weights ``[n_boot, n]`` (counts of each item in a with-replacement draw, over ``n``)."""
    idx = rng.integers(0, n, size=(n_boot, n))
    w = np.zeros((n_boot, n))
    np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
    return w / n


def _seed_weights(rng: np.random.Generator, n_boot: int, n_seeds: int) -> np.ndarray:
    return _weights(rng, n_boot, n_seeds) if n_seeds > 1 else np.ones((n_boot, 1))
