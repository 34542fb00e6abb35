"""Metric and interval functions on tiny inputs whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rlroute.eval.metrics import apgr, cpt, episode_metrics, pgr, threshold_sweep
from rlroute.eval.stats import bootstrap_interval, t_interval

# Four requests: ok (large, small, hybrid). q_strong = 3/4, q_weak = 1/4.
OK = [(True, False, True), (True, False, False), (True, True, True), (False, False, False)]


def recs(actions: list[int], scores: list[float] | None = None, **over: object) -> list[dict]:
    out = []
    for k, (a, ok) in enumerate(zip(actions, OK, strict=True)):
        r = {
            "action": a, "ok_large": ok[0], "ok_small": ok[1], "ok_hybrid": ok[2], "quality_ok": ok[a],
            "failed": False, "ttft": 0.1 * (k + 1), "tpot": 0.02, "e2e": 1.0 * (k + 1), "cost": [4.0, 1.0, 2.0][a],
            "prompt_tokens": 100, "cached_tokens": 25 * k, "score": math.nan if scores is None else scores[k],
        }
        r.update(over)
        out.append(r)
    return out


def test_pgr_anchors() -> None:
    assert pgr(0.25, 0.25, 0.75) == 0.0 and pgr(0.75, 0.25, 0.75) == 1.0 and pgr(0.5, 0.25, 0.75) == 0.5
    assert math.isnan(pgr(0.5, 0.5, 0.5))


@pytest.mark.parametrize(("action", "expected"), [(1, 0.0), (0, 1.0)])
def test_fixed_rules_report_one_operating_point_not_an_apgr(action: int, expected: float) -> None:
    m = episode_metrics(recs([action] * 4))
    assert m["pgr"] == pytest.approx(expected) and m["strong_share"] == 1.0 - action
    assert math.isnan(m["apgr"]) and math.isnan(m["cpt50"])  # no score, no curve: no APGR


def test_episode_metrics_by_hand() -> None:
    m = episode_metrics(recs([1, 0, 1, 2]), slo_ttft=0.25, reference_cost=16.0)
    # chosen ok: small F, large T, small T, hybrid F → 0.5
    assert m["quality"] == 0.5 and m["quality_drawn"] == 0.5
    assert m["q_weak"] == 0.25 and m["q_strong"] == 0.75 and m["pgr"] == pytest.approx(0.5)
    assert m["cost"] == pytest.approx(8.0 / 4) and m["cost_saving"] == pytest.approx(0.5)
    assert m["strong_share"] == 0.5 and (m["mix_large"], m["mix_small"], m["mix_hybrid"]) == (0.25, 0.5, 0.25)
    assert m["cache_hit_rate"] == pytest.approx(150 / 400)
    assert m["slo_attainment"] == 0.5  # ttft 0.1, 0.2 meet 0.25; 0.3, 0.4 do not
    assert m["e2e_p50"] == pytest.approx(2.5) and m["ttft_p99"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4], 99))
    # single operating point: no curve, so no CPT
    assert math.isnan(m["cpt50"]) and math.isnan(m["cpt80"])


def test_hybrid_has_its_own_ttft_target_when_the_reward_gives_one() -> None:
    rows = recs([1, 0, 1, 2])  # ttft 0.1, 0.2, 0.3, 0.4; the last is the hybrid
    assert episode_metrics(rows, slo_ttft=0.25)["slo_attainment"] == 0.5
    assert episode_metrics(rows, slo_ttft=0.25, slo_ttft_hybrid=0.5)["slo_attainment"] == 0.75


def test_failed_requests_count_as_bad_and_are_left_out_of_latency() -> None:
    rs = recs([0, 0, 0, 0])
    rs[0].update(failed=True, ttft=math.nan, e2e=math.nan)
    m = episode_metrics(rs)
    assert m["quality"] == 0.5 and m["failed_rate"] == 0.25 and m["e2e_p50"] == pytest.approx(3.0)


def test_threshold_sweep_and_apgr_of_a_perfect_ranking() -> None:
    # Gains of large over small: +1, +1, 0, 0. A perfect score ranks the two +1 first.
    ok_l = np.array([1, 1, 1, 0], bool)
    ok_s = np.array([0, 0, 1, 0], bool)
    xs, qs = threshold_sweep(np.array([0.9, 0.8, 0.1, 0.2]), ok_l, ok_s, n_bins=4)
    assert list(xs) == [0, 0.25, 0.5, 0.75, 1.0]
    assert list(qs) == pytest.approx([0.25, 0.5, 0.75, 0.75, 0.75])
    # PGR curve 0, .5, 1, 1, 1 → trapezoid area = (.25 + .75 + 1 + 1) / 4 = 0.75
    assert apgr(xs, qs, 0.25, 0.75) == pytest.approx(0.75)
    assert cpt(xs, qs, 0.25, 0.75, 0.5) == pytest.approx(0.25)
    assert cpt(xs, qs, 0.25, 0.75, 0.8) == pytest.approx(0.25 + 0.25 * 0.6)


def test_random_ranking_apgr_is_about_half() -> None:
    rng = np.random.default_rng(0)
    ok_l, ok_s = rng.random(4000) < 0.8, rng.random(4000) < 0.6
    xs, qs = threshold_sweep(rng.random(4000), ok_l, ok_s)
    assert apgr(xs, qs, ok_s.mean(), ok_l.mean()) == pytest.approx(0.5, abs=0.05)


def test_tied_scores_move_together_as_a_threshold_does() -> None:
    # A constant score (e.g. a router that cannot tell requests apart) gives only the two end points:
    # the straight line between all-small and all-large, APGR 0.5, as RouteLLM's qcut sweep gives.
    ok_l, ok_s = np.array([1, 1, 1, 0], bool), np.array([0, 0, 1, 0], bool)
    xs, qs = threshold_sweep(np.full(4, 0.3), ok_l, ok_s, n_bins=4)
    assert set(xs.tolist()) == {0.0, 1.0}
    assert apgr(xs, qs, 0.25, 0.75) == pytest.approx(0.5)
    assert math.isnan(apgr([0.4], [0.5], 0.25, 0.75))  # one point: no area


def test_scored_policy_uses_the_sweep() -> None:
    m = episode_metrics(recs([0, 0, 1, 1], scores=[0.9, 0.8, 0.1, 0.2]))
    # The operating point recovers the whole gap (PGR 1); the swept curve (20 quantile bins of 4 scores)
    # has the points of the perfect ranking above, area 0.75.
    assert m["pgr"] == pytest.approx(1.0) and m["apgr"] == pytest.approx(0.75)


def test_t_interval_matches_scipy() -> None:
    x = [1.0, 2.0, 4.0]
    iv = t_interval(x)
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(x), scale=stats.sem(x))
    assert iv.mean == pytest.approx(7 / 3) and iv.low == pytest.approx(lo) and iv.high == pytest.approx(hi)
    assert iv.n == 3 and "±" in iv.fmt()
    one = t_interval([5.0, math.nan])
    assert one.mean == 5.0 and math.isnan(one.half_width) and one.fmt() == "5.000"
    with pytest.raises(ValueError, match="confidence"):
        t_interval(x, 1.5)


def test_bootstrap_interval_covers_the_mean() -> None:
    data = np.random.default_rng(1).normal(10.0, 1.0, 400)
    iv = bootstrap_interval(data.size, lambda idx: float(data[idx].mean()), np.random.default_rng(0), 500)
    assert iv.low < 10.0 < iv.high and iv.high - iv.low < 0.5


def test_summary_ratios_are_pooled_over_seeds() -> None:
    from rlroute.eval.run import summarise

    # Seed 0: the two models tie (gap 0 → per-seed PGR undefined); seed 1: large wins twice.
    tie = [dict(r, seed=0) for r in recs([1, 1, 1, 1])]
    for r in tie:
        r["ok_large"] = r["ok_small"] = True
    win = [dict(r, seed=1) for r in recs([0, 0, 1, 1])]
    per_seed = [episode_metrics(tie), episode_metrics(win)]
    assert math.isnan(per_seed[0]["pgr"])
    summary = summarise(per_seed, tie + win)
    # pooled: q_weak = (4 + 1) / 8, q_strong = (4 + 3) / 8, policy = (4 + 3) / 8 → PGR 1
    assert summary["pgr"].mean == pytest.approx(1.0) and summary["pgr"].n == 2  # resampled by seed (window)
    assert summary["quality"].n == 2  # per-request metrics keep the t-interval over seeds
    anchors = summarise([episode_metrics(recs([1] * 4))], recs([1] * 4))
    assert anchors["pgr"].mean == 0.0 and math.isnan(anchors["apgr"].mean)


def test_bootstrap_option_gives_request_level_intervals() -> None:
    from rlroute.eval.run import summarise

    rows = [dict(r, seed=0) for r in recs([1, 0, 1, 2])] * 5
    summary = summarise([episode_metrics(rows)], rows, ci="bootstrap", n_boot=200)
    assert summary["quality"].n == 20 and summary["quality"].low < 0.5 < summary["quality"].high
    assert summary["mix_large"].n == 1  # episode-level metrics stay over seeds
    with pytest.raises(ValueError, match="eval.ci"):
        summarise([episode_metrics(rows)], rows, ci="jackknife")


def test_learned_policy_score_is_p_large_plus_p_hybrid_over_allowed_actions() -> None:
    from rlroute.policies.common import strong_score

    assert strong_score(np.array([0.2, 0.5, 0.3])) == pytest.approx(0.5)
    # Hybrid not allowed: its probability mass is dropped and the rest renormalised.
    assert strong_score(np.array([0.2, 0.5, 0.3]), np.array([True, True, False])) == pytest.approx(0.2 / 0.7)
    assert math.isnan(strong_score(np.zeros(3)))
