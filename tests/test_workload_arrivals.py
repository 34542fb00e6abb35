"""Arrival processes hit their rate and burstiness (CV) within sampling error; seeded."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rlroute.workload.arrivals import DiurnalArrivals, GammaArrivals, PoissonArrivals

N = 20_000


def _times(proc, seed: int = 0, n: int = N, rate: float | None = None) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array(
        [a.time for a in itertools.islice(proc.arrivals(np.random.default_rng(seed), rate=rate), n)]
    )


@pytest.mark.parametrize(
    ("proc", "rate", "cv"),
    [
        (PoissonArrivals(5.0), 5.0, 1.0),
        (GammaArrivals(20.0, cv=2.0), 20.0, 2.0),
        (GammaArrivals(1.0, cv=0.5), 1.0, 0.5),
        (GammaArrivals(3.0, cv=4.0), 3.0, 4.0),
    ],
)
def test_renewal_rate_and_cv(proc, rate: float, cv: float) -> None:  # type: ignore[no-untyped-def]
    t = _times(proc)
    gaps = np.diff(np.concatenate(([0.0], t)))
    # Mean gap has standard error cv/(rate*sqrt(N)); allow 5 standard errors.
    assert 1 / gaps.mean() == pytest.approx(rate, rel=5 * cv / math.sqrt(N))
    # Sample CV: the SD of the sample SD grows with the gamma's kurtosis (6 cv^2); allow a generous 5 %+.
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05 + 0.03 * cv)
    assert np.all(gaps >= 0)


def test_rate_override_and_seed() -> None:
    p = GammaArrivals(1.0, cv=1.5)
    t = _times(p, rate=50.0)
    assert N / t[-1] == pytest.approx(50.0, rel=0.05)
    assert np.array_equal(_times(p, seed=7, n=100), _times(p, seed=7, n=100))
    assert not np.array_equal(_times(p, seed=7, n=100), _times(p, seed=8, n=100))


@pytest.mark.parametrize("cv", [1.0, 2.0])
def test_diurnal_follows_its_rate_curve(cv: float) -> None:
    d = DiurnalArrivals(rate=10.0, amplitude=0.8, period_s=1000.0, cv=cv)
    t = _times(d, n=50_000)
    periods = int(t[-1] // 1000)
    t = t[t < periods * 1000]
    assert len(t) / (periods * 1000) == pytest.approx(10.0, rel=0.03)
    # Counts in the peak quarter vs the trough quarter of each cycle: expected ratio
    # (1 + 0.8 * 0.9003) / (1 - 0.8 * 0.9003), 0.9003 = mean of sin over the quarter around its peak.
    phase = (t % 1000) / 1000
    peak = np.sum((phase > 0.125) & (phase < 0.375))
    trough = np.sum((phase > 0.625) & (phase < 0.875))
    s = 0.8 * (2 * math.sqrt(2) / math.pi)
    assert peak / trough == pytest.approx((1 + s) / (1 - s), rel=0.08)


def test_bursty_diurnal_is_burstier_than_poisson_diurnal() -> None:
    def gap_cv(cv: float) -> float:
        gaps = np.diff(_times(DiurnalArrivals(rate=10.0, amplitude=0.3, period_s=1000.0, cv=cv), n=50_000))
        return float(gaps.std() / gaps.mean())

    poisson, bursty = gap_cv(1.0), gap_cv(2.5)
    assert poisson == pytest.approx(1.0, abs=0.1)  # the sinusoid alone adds little
    assert 1.5 < bursty < 2.5  # thinning dilutes the candidates' CV 2.5 but keeps bursts


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(PoissonArrivals, {"rate": 0}), (GammaArrivals, {"cv": -1}), (DiurnalArrivals, {"amplitude": 1.5})],
)
def test_bad_parameters(cls, kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="must|needs"):
        cls(**kwargs)
