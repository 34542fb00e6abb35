"""Off-policy evaluation (rlroute/eval/ope.py): the estimators on a contextual bandit whose true values are
known, and ``rlroute ope`` on a decision log against an exported policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlroute.eval.ope import estimate, main

D = 5
THETA = np.array([[0.8, -0.5, 0.0, 0.3, 0.0], [-0.2, 0.6, 0.4, 0.0, 0.0], [0.1, 0.1, -0.6, 0.0, 0.5]])
BIAS = np.array([0.2, 0.5, 0.0])


def logging_action(x: np.ndarray) -> np.ndarray:
    return np.where(x[:, 0] > 0.5, 0, 1)


def target_action(x: np.ndarray) -> np.ndarray:
    return np.where(x[:, 1] > 0.0, 0, np.where(x[:, 2] > 1.0, 2, 1))


def mean_reward(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return (x * THETA[a]).sum(axis=1) + BIAS[a]


def test_estimators_are_unbiased_and_cover_on_a_known_bandit() -> None:
    """An ε = 0.3 logging policy, a target that disagrees with its base rule on ~50 % of contexts, rewards
    linear in the context plus a term the reward model cannot fit (|x_3| per action), with noise: over 30
    logs IPS and DR centre on the true value and on the true difference to the logging policy, their 95 %
    intervals of both cover the truth at near the nominal rate, and DR (misspecified model) is the tighter."""
    eps = 0.3

    def reward(x: np.ndarray, a: np.ndarray) -> np.ndarray:
        return mean_reward(x, a) + 0.4 * np.abs(x[:, 3]) * (a == 1)

    truth_x = np.random.default_rng(99).normal(size=(400_000, D))
    base_x = logging_action(truth_x)
    truth = float(reward(truth_x, target_action(truth_x)).mean())
    v_log = float(((1 - eps) * reward(truth_x, base_x)
                   + eps / 3 * sum(reward(truth_x, np.full(len(truth_x), k)) for k in range(3))).mean())
    rng = np.random.default_rng(0)
    n, draws = 1000, 30
    hits = {k: 0 for k in ("ips", "snips", "dr")}
    diff_hits = dict(hits)
    errs: dict[str, list[float]] = {k: [] for k in hits}
    disagree = []
    for _ in range(draws):
        x = rng.normal(size=(n, D))
        base = logging_action(x)
        a = np.where(rng.random(n) < eps, rng.integers(0, 3, n), base)
        p = (1 - eps) * (a == base) + eps / 3
        r = reward(x, a) + rng.normal(0, 0.5, n)
        t = target_action(x)
        disagree.append(float((t != base).mean()))
        est = estimate(r, a, p, t, x, n_boot=200, rng=rng)
        for k in hits:
            hits[k] += est[k]["lo"] <= truth <= est[k]["hi"]
            diff_hits[k] += est[k]["diff_lo"] <= truth - v_log <= est[k]["diff_hi"]
            errs[k].append(est[k]["value"] - truth)
            assert est[k]["diff"] == pytest.approx(est[k]["value"] - r.mean())
    assert np.mean(disagree) > 0.3
    for k in ("ips", "dr"):
        assert hits[k] / draws >= 0.85 and diff_hits[k] / draws >= 0.85, (k, hits, diff_hits)
        assert abs(np.mean(errs[k])) < 3 * np.std(errs[k]) / np.sqrt(draws), (k, np.mean(errs[k]))
    assert np.std(errs["dr"]) < np.std(errs["ips"]), "the reward model reduces the variance"


def test_reward_features_undo_the_token_transform() -> None:
    """The reward model's token features are the raw counts (in thousands) the observation encodes."""
    from rlroute.eval.ope_model import REWARD_FEATURES, reward_features
    from rlroute.features import SCHEMA

    obs = np.zeros((2, len(SCHEMA)), np.float32)
    f = {x.name: x for x in SCHEMA.features}
    i = list(SCHEMA.names).index("request.input_tokens")
    obs[0, i] = f["request.input_tokens"].apply(3000.0)
    obs[1, i] = f["request.input_tokens"].apply(150.0)
    feats = reward_features(obs)
    assert feats.shape == (2, len(REWARD_FEATURES))
    assert feats[:, 0] == pytest.approx([3.0, 0.15], rel=1e-4)


def test_cli_on_a_log_of_the_policys_own_decisions(tmp_path: Path) -> None:
    """A log whose actions are the candidate's own (propensity 1): every estimate equals the logged mean."""
    from rlroute.bench.parity import DEFAULT_POLICY
    from rlroute.features import SCHEMA
    from rlroute.policies.onnx import OnnxPolicy
    from rlroute.serve.decisionlog import SCHEMA as LOG_SCHEMA

    pol = OnnxPolicy(str(DEFAULT_POLICY), ood=False)
    rng = np.random.default_rng(1)
    lo, hi = SCHEMA.low.astype(float), SCHEMA.high.astype(float)
    lines = []
    for i in range(300):
        obs = (lo + (hi - lo) * rng.random(len(lo))).astype(np.float32)
        a = int(np.argmax(pol.logits(obs)))
        cost = [0.01, 0.002, 0.006][a] * (1 + rng.random())
        lines.append(json.dumps({"schema": LOG_SCHEMA, "arrival_s": float(i), "request_id": f"r{i}", "input_len": 100,
                                 "max_new_tokens": 8, "block_size": 64, "blocks": [], "action": a, "propensity": 1.0,
                                 "obs": obs.tolist(), "quality_label": None,
                                 "outcome": {"cost": cost, "e2e_s": 1.0, "slo_ok": True}}))
    lines.append(json.dumps({"schema": LOG_SCHEMA, "arrival_s": 0.0, "request_id": "bad", "input_len": 0,
                             "max_new_tokens": 0, "block_size": 64, "blocks": [], "action": None, "outcome": None}))
    log = tmp_path / "d.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out = main(["--log", str(log), "--policy", str(DEFAULT_POLICY), "--out", str(tmp_path / "rep"),
                "--bootstrap", "100"])
    res = json.loads((tmp_path / "rep" / "ope.json").read_text())
    assert res["records"] == 300 and res["skipped"] == 1 and res["agreement"] == 1.0
    est = res["estimates"]
    for k in ("ips", "snips", "dr"):
        assert est[k]["value"] == pytest.approx(est["logged"]["value"], rel=1e-9)
    assert out["value"] == pytest.approx(est["dr"]["value"])
    assert (tmp_path / "rep" / "ope.png").stat().st_size > 0 and "Off-policy" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.slow
def test_bench_ope_reports_each_estimator(tmp_path: Path) -> None:
    """``rlroute bench ope`` in a tiny mode: its JSON carries every estimator's error and coverage and the
    disagreement between candidate and incumbent (the figures themselves are the bench's, not asserted)."""
    from rlroute.bench.ope import main as bench

    out = bench(["--reps", "2", "--requests", "150", "--also-rates", "--peak-rate", "0", "--twin-reps", "2",
                 "--out", str(tmp_path / "ope.json")])
    low = out["loads"]["below_knee"]
    assert out["unit"] == "dr_relative_error_of_difference" and len(low["repetitions"]) == 2
    assert 0.0 <= out["dr_twin"]["coverage"] <= 1.0 and "dr_twin_oracle" not in out
    for k in ("ips", "snips", "dr", "dr_twin"):
        assert np.isfinite(low["cost_latency"][k]["relative_error"]) and 0.0 <= low["cost_only"][k]["coverage"] <= 1.0
    assert 0.0 < out["disagreement"] < 1.0
