"""Paired statistics on synthetic cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlroute.eval.stats import bootstrap_interval, cluster_bootstrap, paired_bootstrap


def _study(rng: np.random.Generator, shift: float, n_train: int = 5, n_windows: int = 10) -> tuple[np.ndarray, ...]:
    """A learned policy [train seed, window] and a baseline [window]: a shared window effect (the traffic),
    a training-seed effect, noise, and a true mean difference ``shift``."""
    window = rng.normal(0.0, 1.0, n_windows)
    seed = rng.normal(0.0, 0.02, (n_train, 1))
    learned = window + shift + seed + rng.normal(0.0, 0.02, (n_train, n_windows))
    baseline = window + rng.normal(0.0, 0.02, n_windows)
    return learned, baseline


def test_a_constant_shift_is_detected_and_covered() -> None:
    learned, baseline = _study(np.random.default_rng(0), shift=0.1)
    iv = paired_bootstrap(learned, baseline, np.random.default_rng(1))
    assert iv.low > 0.0 and iv.n == 10 and iv.mean == pytest.approx(0.1, abs=0.035)  # coverage: below
    # Unpaired, the shared window effect (sd 1) would swamp a 0.1 shift: pairing is what detects it.
    own = paired_bootstrap(learned, None, np.random.default_rng(1))
    assert own.high - own.low > 5 * (iv.high - iv.low)


def test_identical_policies_give_an_interval_containing_zero() -> None:
    learned, _ = _study(np.random.default_rng(2), shift=0.0)
    iv = paired_bootstrap(learned, learned, np.random.default_rng(3))
    assert iv.mean == 0.0 and iv.low <= 0.0 <= iv.high


def test_coverage_of_a_null_difference_is_near_nominal() -> None:
    # Same distribution, different draws, 200 replications: the 95 % interval holds the true 0 in
    # roughly 95 % of them (percentile bootstrap with 10 windows: a little under; the two-way resampling of
    # training seeds: a little over).
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(200):
        learned, baseline = _study(rng, shift=0.0)
        iv = paired_bootstrap(learned, baseline, rng, n_boot=500)
        hits += iv.low <= 0.0 <= iv.high
    assert 0.85 <= hits / 200 <= 0.995


def test_training_seed_variance_widens_the_interval() -> None:
    rng = np.random.default_rng(5)
    window = rng.normal(0.0, 1.0, 10)
    calm = window + 0.1 + rng.normal(0.0, 0.01, (5, 10))
    shaky = window + 0.1 + rng.normal(0.0, 0.3, (5, 1)) + rng.normal(0.0, 0.01, (5, 10))
    narrow = paired_bootstrap(calm, window, np.random.default_rng(6))
    wide = paired_bootstrap(shaky, window, np.random.default_rng(6))
    assert wide.high - wide.low > 5 * (narrow.high - narrow.low)


def test_clustering_widens_the_interval_when_prompts_repeat() -> None:
    # 40 prompts, each repeated 25 times with a shared per-prompt effect: 1000 requests but only 40
    # independent units. The naive request bootstrap is too narrow; the prompt-clustered one is not.
    rng = np.random.default_rng(7)
    prompt = np.repeat(np.arange(40), 25)
    diffs = 0.05 + rng.normal(0.0, 0.5, 40)[prompt] + rng.normal(0.0, 0.1, prompt.size)
    clustered = cluster_bootstrap(diffs, prompt, np.random.default_rng(8))
    naive = bootstrap_interval(diffs.size, lambda idx: float(diffs[idx].mean()), np.random.default_rng(8), 1000)
    assert clustered.n == 40 and naive.n == 1000
    assert (clustered.high - clustered.low) > 3 * (naive.high - naive.low)
    # Without repeats (one request per cluster) both agree.
    single = cluster_bootstrap(diffs, np.arange(diffs.size), np.random.default_rng(8))
    assert single.high - single.low == pytest.approx(naive.high - naive.low, rel=0.15)


def test_cluster_labels_in_the_generic_bootstrap_resample_whole_clusters() -> None:
    x = np.concatenate([np.zeros(50), np.ones(50)])  # two windows, each constant
    iv = bootstrap_interval(100, lambda idx: float(x[idx].mean()), np.random.default_rng(0), 400,
                            clusters=np.repeat([0, 1], 50))
    assert iv.n == 2 and iv.low == 0.0 and iv.high == 1.0  # only all-0, mixed or all-1 resamples exist


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="same test windows"):
        paired_bootstrap(np.zeros((5, 10)), np.zeros(9))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([[1.0, math.nan]], [0.0, 0.0])
    with pytest.raises(ValueError, match="equal length"):
        cluster_bootstrap([1.0, 2.0], [0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0, 2.0], confidence=95)
    one = paired_bootstrap([0.3])
    assert one.mean == 0.3 and math.isnan(one.low)  # one window: no interval
