"""Arrival-rate forecasters over fixed buckets, and the accuracy figures the autoscaling study reports.

* :class:`HoltWinters` -- statsmodels' additive Holt-Winters (damped additive trend, additive season of
  ``season_s``). The smoothing parameters are optimised (statsmodels' maximum likelihood) once at least two
  seasons of history exist and again every ``refit_s``; between those fits the model is re-run over the
  growing history with the last fitted parameters and initial states fixed (~2 ms instead of ~1 s). With less
  than two seasons there is no season to estimate: Holt's damped linear trend with FIXED smoothing
  (level 0.5, trend 0.1, damping 0.9 -- ASSUMED, common textbook values, Hyndman & Athanasopoulos, *Forecasting:
  Principles and Practice*, 3rd ed., section 8.2) extrapolates the recent trend instead.
* :class:`SeasonalNaive` -- the value one season earlier (the reference the skill is measured against); the
  last value before a full season exists.

Buckets hold arrival *counts*; forecasts are rates (req/s). :func:`accuracy` computes MAPE and the share of
buckets within 10 %; :func:`poisson_floor` the same figures for a perfect forecast of a Poisson process (the
noise floor of the bucket size: no forecaster can beat it on counts drawn from the true rate).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

HOLT_FALLBACK = {"smoothing_level": 0.5, "smoothing_trend": 0.1, "damping_trend": 0.9}  # ASSUMED, see module doc


class Forecaster(ABC):
    """Forecasts the arrival rate of the next buckets from the counts of the past ones.

    Args:
        bucket_s: seconds per bucket (the scaler's tick).
        season_s: seconds per season (a day; the diurnal scenario compresses it).
    """

    def __init__(self, bucket_s: float, season_s: float) -> None:
        if not bucket_s > 0 or not season_s > 0:
            raise ValueError(f"forecast: bucket_s and season_s must be > 0, got {bucket_s}, {season_s}")
        self.bucket_s = float(bucket_s)
        self.season = max(2, round(season_s / bucket_s))
        self.counts: list[float] = []

    def reset(self) -> None:
        """Forget the history."""
        self.counts = []

    def observe(self, count: float) -> None:
        """Append the arrival count of the bucket that just ended."""
        self.counts.append(float(count))

    @abstractmethod
    def predict(self, steps: int) -> np.ndarray:
        """Rates (req/s) of the next ``steps`` buckets (``steps >= 1``); zeros without history."""


class SeasonalNaive(Forecaster):
    """The rate one season earlier (the last bucket's before a season of history exists)."""

    def predict(self, steps: int) -> np.ndarray:
        y = self.counts
        if not y:
            return np.zeros(steps)
        m = self.season
        out = [y[len(y) - m + (h % m)] if len(y) >= m else y[-1] for h in range(steps)]
        return np.asarray(out) / self.bucket_s


class HoltWinters(Forecaster):
    """Additive Holt-Winters (statsmodels), see the module doc.

    Args:
        bucket_s: seconds per bucket.
        season_s: seconds per season.
        refit_s: seconds of new history between two optimised fits (default one season).
    """

    def __init__(self, bucket_s: float, season_s: float, refit_s: float | None = None) -> None:
        super().__init__(bucket_s, season_s)
        self.refit = max(1, round((refit_s if refit_s is not None else season_s) / bucket_s))
        self._fit: dict[str, Any] | None = None
        self._fit_at = 0

    def reset(self) -> None:
        super().reset()
        self._fit = None
        self._fit_at = 0

    def predict(self, steps: int) -> np.ndarray:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        y = np.asarray(self.counts, dtype=float)
        n, m = len(y), self.season
        if n < 3:
            return np.full(steps, y[-1] / self.bucket_s if n else 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' convergence / frequency warnings on short series
            if n < 2 * m:
                model = ExponentialSmoothing(y, trend="add", damped_trend=True, initialization_method="known",
                                             initial_level=y[0], initial_trend=0.0)
                fc = model.fit(optimized=False, **HOLT_FALLBACK).forecast(steps)
            elif self._fit is None or n - self._fit_at >= self.refit:
                res = ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal="add",
                                           seasonal_periods=m).fit()
                p = res.params
                self._fit = {"params": {k: float(p[k]) for k in ("smoothing_level", "smoothing_trend",
                                                                  "smoothing_seasonal", "damping_trend")},
                             "init": {"initial_level": float(p["initial_level"]),
                                      "initial_trend": float(p["initial_trend"]),
                                      "initial_seasonal": np.asarray(p["initial_seasons"], dtype=float)}}
                self._fit_at = n
                fc = res.forecast(steps)
            else:
                model = ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal="add", seasonal_periods=m,
                                             initialization_method="known", **self._fit["init"])
                fc = model.fit(optimized=False, **self._fit["params"]).forecast(steps)
        return np.maximum(np.asarray(fc, dtype=float), 0.0) / self.bucket_s


FORECASTERS: dict[str, type[Forecaster]] = {"holt_winters": HoltWinters, "seasonal_naive": SeasonalNaive}


def build_forecaster(method: str, bucket_s: float, season_s: float, **kwargs: Any) -> Forecaster:
    """A forecaster by name (:data:`FORECASTERS`). ``refit_s`` is a fitted model's option: the seasonal-naive
    forecast fits nothing, so it takes the config's default ``refit_s: null`` and refuses any other value."""
    if method not in FORECASTERS:
        raise ValueError(f"scaler.forecast.method must be one of {sorted(FORECASTERS)}, got {method!r}")
    if method == "seasonal_naive":
        refit = kwargs.pop("refit_s", None)
        if refit is not None:
            raise ValueError(f"scaler.forecast.refit_s applies to holt_winters only (seasonal_naive fits nothing), "
                             f"got {refit!r} with method=seasonal_naive")
    try:
        return FORECASTERS[method](bucket_s, season_s, **kwargs)
    except TypeError as e:
        raise ValueError(f"scaler.forecast: unknown option for method={method!r}: {e}") from e


def accuracy(forecast: Sequence[float], actual: Sequence[float]) -> dict[str, float]:
    """MAPE and the share of buckets within 10 % of ``actual`` (buckets with ``actual`` 0 are skipped)."""
    f, a = np.asarray(forecast, dtype=float), np.asarray(actual, dtype=float)
    ok = a > 0
    if not ok.any():
        return {"mape": math.nan, "within_10pct": math.nan, "buckets": 0}
    err = np.abs(f[ok] - a[ok]) / a[ok]
    return {"mape": float(err.mean()), "within_10pct": float((err <= 0.10).mean()), "buckets": int(ok.sum())}


def poisson_floor(rates: Sequence[float], bucket_s: float) -> dict[str, float]:
    """Expected MAPE and share within 10 % when the forecast is the true rate and each bucket's count is
    Poisson with mean ``rate * bucket_s`` (exact sums over the Poisson pmf)."""
    from scipy.stats import poisson

    mape, within = [], []
    for r in rates:
        lam = float(r) * bucket_s
        if lam <= 0:
            continue
        k = np.arange(0, int(lam + 12 * math.sqrt(lam) + 20))
        pmf = poisson.pmf(k, lam)
        rel = np.abs(k - lam) / lam
        mape.append(float((pmf * rel).sum()))
        within.append(float(pmf[rel <= 0.10].sum()))
    return {"mape": float(np.mean(mape)) if mape else math.nan,
            "within_10pct": float(np.mean(within)) if within else math.nan}
