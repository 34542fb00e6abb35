"""The OOD guard (rlroute/export/ood.py) and range-clipped normalisation (rlroute/train/normalize.py).

Small real cases: Gaussian observations with the schema's block layout for the guard's calibration and
scoring; a one-env VecNormalize for the normalisation; a tiny PPO actor exported to ONNX for the graph.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rlroute.export.graph import ObsNorm
from rlroute.export.ood import BLOCKS, ObsStats, OodGuard, calibrate, fallback_rate
from rlroute.train.normalize import RangeRunningMeanStd, RangeVecNormalize

DIM = 24
SLICES = {"request": slice(0, 12), "system": slice(12, 20), "cache": slice(20, 24)}


def gaussian(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """``n`` observations: features 0..22 ~ N(0.2, 0.1), feature 23 constant 0.5 (a constant-in-training feature)."""
    x = np.random.default_rng(seed).normal(0.2 + shift, 0.1, size=(n, DIM)).astype(np.float32)
    x[:, 23] = 0.5
    return x


@pytest.fixture(scope="module")
def calibrated() -> tuple[OodGuard, dict[str, Any]]:
    stats = ObsStats.from_obs(gaussian(20_000, 0), "test: train")
    return calibrate(stats, SLICES, gaussian(5_000, 1), gaussian(5_000, 2), target_fpr=0.01)


def test_calibration_meets_the_false_positive_target_on_unseen_data(calibrated: tuple[OodGuard, Any]) -> None:
    guard, record = calibrated
    assert record["meets_target"] and record["fpr_holdout"] <= 0.01 and record["fpr_fit"] <= 0.005
    fresh = gaussian(20_000, 3)  # a third sample, used by nobody
    assert guard.flags(fresh).mean() <= 0.015
    assert set(record["fpr_holdout_by_block"]) == set(BLOCKS)


def test_shifted_and_constant_feature_deviations_are_flagged(calibrated: tuple[OodGuard, Any]) -> None:
    guard, _ = calibrated
    assert guard.flags(gaussian(500, 4, shift=0.3)).mean() > 0.99  # every feature moved by 3 sigma
    one = gaussian(500, 5)
    one[:, 3] = 2.0  # one request feature far outside its training range, the rest typical
    assert guard.flags(one).all()
    const = gaussian(500, 6)
    const[:, 23] = 0.6  # the feature that never moved in training moved by 0.1
    drift, out = guard.scores(const)
    assert out[:, BLOCKS.index("cache")].all() and not out[:, :2].any()


def test_single_observation_path_agrees_with_the_batch_path(calibrated: tuple[OodGuard, Any]) -> None:
    guard, _ = calibrated
    x = np.concatenate([gaussian(300, 7), gaussian(300, 8, shift=0.05)])
    x[::50, 5] = 3.0
    batch_flags = guard.flags(x)
    drift, _ = guard.scores(x)
    for i in range(len(x)):
        flagged, drift2 = guard.check(x[i])
        assert flagged == batch_flags[i]
        np.testing.assert_allclose(np.sqrt(drift2), drift[i], rtol=1e-5)


def test_guard_round_trips_through_the_manifest_form(calibrated: tuple[OodGuard, Any]) -> None:
    guard, _ = calibrated
    again = OodGuard.from_json(guard.to_json())
    x = gaussian(1000, 9, shift=0.02)
    assert (again.flags(x) == guard.flags(x)).all()
    looser = OodGuard.from_json(guard.to_json(), scale=3.0)
    assert looser.flags(x).sum() <= guard.flags(x).sum()
    with pytest.raises(ValueError, match="thresholds"):
        OodGuard.from_json({k: v for k, v in guard.to_json().items() if k != "thresholds"})


def test_fallback_rate_for_reports(calibrated: tuple[OodGuard, Any]) -> None:
    guard, _ = calibrated
    manifest = {"ood": guard.to_json()}
    ok = fallback_rate(manifest, gaussian(2000, 10))
    assert ok["guarded"] and ok["n"] == 2000 and ok["rate"] <= 0.02
    bad = fallback_rate(manifest, gaussian(200, 11, shift=0.3))
    assert bad["rate"] > 0.99 and min(bad["mean_drift"].values()) > 1.0
    assert fallback_rate({}, gaussian(10, 12)) == {"guarded": False, "n": 10, "rate": 0.0, "by_block": {},
                                                    "mean_drift": {}}
    with pytest.raises(ValueError, match="features"):
        fallback_rate(manifest, np.zeros((3, DIM + 1), np.float32))


class _Walk(gym.Env[np.ndarray, int]):
    """4 features: a random walk, its sign, a constant 0.25 and a value that is 1.0 only at reset."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x = 0.0
        return np.array([0.0, 0.0, 0.25, 1.0], np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x += float(self.np_random.normal())
        return np.array([self.x, np.sign(self.x), 0.25, 0.0], np.float32), 0.0, False, False, {}


def _trained_norm(steps: int = 300) -> RangeVecNormalize:
    from stable_baselines3.common.vec_env import DummyVecEnv

    vn = RangeVecNormalize(DummyVecEnv([_Walk]), norm_reward=False, clip_obs=10.0)
    vn.reset()
    for _ in range(steps):
        vn.step(np.array([0]))
    vn.training = False
    return vn


def test_range_clip_keeps_a_feature_constant_in_training_at_its_training_value() -> None:
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.vec_env import VecNormalize

    vn = _trained_norm()
    rms = vn.obs_rms
    assert isinstance(rms, RangeRunningMeanStd) and rms.low[2] == rms.high[2] == np.float32(0.25)
    served = np.array([[0.0, 1.0, 0.9, 0.0]], np.float32)  # feature 2 never moved in training
    plain = VecNormalize.__new__(VecNormalize)  # SB3's formula with the same moments, no range clip
    plain.epsilon, plain.clip_obs = vn.epsilon, vn.clip_obs
    moments = RunningMeanStd(shape=(4,))
    moments.mean, moments.var = rms.mean, rms.var
    assert abs(plain._normalize_obs(served, moments)[0, 2]) == 10.0  # the bug: a constant becomes +-clip
    assert abs(vn.normalize_obs(served)[0, 2]) < 1e-3  # clipped to its training value first
    norm = ObsNorm.from_vecnormalize(vn, 4)
    np.testing.assert_array_equal(norm.apply(served), vn.normalize_obs(served))
    assert norm.to_json()["range_clip"] and norm.count == rms.count


def test_range_clip_is_the_identity_in_training() -> None:
    """Every observation the statistics were updated with normalises exactly as plain VecNormalize would."""
    vn = _trained_norm(50)
    rms = vn.obs_rms
    rng = np.random.default_rng(0)
    inside = rng.uniform(rms.low, rms.high, size=(200, 4)).astype(np.float32)
    expect = np.clip((inside - rms.mean) / np.sqrt(rms.var + vn.epsilon), -10, 10).astype(np.float32)
    np.testing.assert_array_equal(vn.normalize_obs(inside), expect)
    again = pickle.loads(pickle.dumps(vn))
    np.testing.assert_array_equal(again.obs_rms.low, rms.low)
    np.testing.assert_array_equal(again.normalize_obs(inside), vn.normalize_obs(inside))


def test_onnx_graph_clips_to_the_training_range_like_training(tmp_path: Path) -> None:
    """The exported graph, SB3 on RangeVecNormalize's output, and ObsNorm.apply agree off the training range."""
    import onnxruntime as ort
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlroute.export.graph import OnnxableActor, export_onnx

    vn = _trained_norm()
    model = PPO("MlpPolicy", DummyVecEnv([_Walk]), n_steps=16, batch_size=16, seed=0, device="cpu")
    norm = ObsNorm.from_vecnormalize(vn, 4)
    path = export_onnx(OnnxableActor(model.policy, norm), 4, tmp_path / "p.onnx", {})
    x = np.random.default_rng(1).normal(0, 30, size=(500, 4)).astype(np.float32)  # mostly off-range
    onnx_logits = ort.InferenceSession(str(path)).run(None, {"obs": x})[0]
    with torch.no_grad():
        feats = model.policy.extract_features(torch.as_tensor(vn.normalize_obs(x)), model.policy.pi_features_extractor)
        ref = model.policy.action_net(model.policy.mlp_extractor.forward_actor(feats)).numpy()
    np.testing.assert_allclose(onnx_logits, ref, atol=1e-5)
    np.testing.assert_array_equal(norm.apply(x), vn.normalize_obs(x))


def test_clock_is_ignored_log_features_get_a_factor_and_a_recurring_minimum_does_not_drift() -> None:
    """Feature 12 is the clock (ignored), 14 a log count (``log1p(256)``), 13 sits on its training minimum
    -1.0 in 50 training observations (an atom, e.g. an empty queue)."""
    train = gaussian(5000, 20)
    train[:50, 13] = -1.0
    stats = ObsStats.from_obs(train, "test: train")
    assert stats.at_low is not None and stats.at_low[13] == 50
    log_norm = np.zeros(DIM)
    log_norm[14] = np.log1p(256.0)
    guard, _ = calibrate(stats, SLICES, gaussian(2000, 21), gaussian(2000, 22), ignored=(12,), log_norm=log_norm)
    base = gaussian(200, 23)
    drift0, out0 = guard.scores(base)
    clock = base.copy()
    clock[:, 12] = 5.0  # far outside anything seen: ignored by both scores
    drift, out = guard.scores(clock)
    np.testing.assert_allclose(drift, drift0, rtol=1e-6)
    assert (out == out0).all()
    sys = BLOCKS.index("system")
    for factor, outside in ((3.0, False), (5.0, True)):  # the range is widened by a factor 4 in 1 + x
        x = base.copy()
        x[:, 14] = stats.high[14] + np.log(factor) / log_norm[14]
        assert (guard.scores(x)[1][:, sys] == outside).all(), factor
    on_atom, at_mean = base.copy(), base.copy()
    on_atom[:, 13] = -1.0
    at_mean[:, 13] = stats.mean[13]
    np.testing.assert_allclose(guard.scores(on_atom)[0], guard.scores(at_mean)[0], rtol=1e-5)
    no_atoms = OodGuard.from_json({**guard.to_json(), "stats": {**stats.to_json(), "at_low": None}})
    assert (no_atoms.scores(on_atom)[0][:, sys] > guard.scores(on_atom)[0][:, sys]).all()
    flagged, drift2 = guard.check(on_atom[0])
    np.testing.assert_allclose(np.sqrt(drift2), guard.scores(on_atom[:1])[0][0], rtol=1e-5)


def lengths(n: int, seed: int, top: float = 0.835) -> np.ndarray:
    """Gaussian observations whose features 5 and 6 are lengths on the ``log1p(2048)`` scale of
    ``request.input_tokens`` (cap 1.0): 5 up to ``top`` (0.835: ~9k tokens), 6 up to its cap."""
    x = gaussian(n, seed)
    rng = np.random.default_rng(seed + 1000)
    x[:, 5] = rng.uniform(0.3, top, n)
    x[:, 6] = np.minimum(rng.uniform(0.3, 1.05, n), 1.0)
    return x


LOG_NORM = np.where(np.isin(np.arange(DIM), [5, 6]), np.log1p(2048.0), 0.0)
SATURATION = ((5, 1.0), (6, 1.0))


def test_a_saturated_length_never_at_its_cap_in_training_is_refused() -> None:
    """Feature 5's training maximum 0.835 lies within the range factor 4 of its cap (0.835 + log 4 / log1p(2048)
    = 1.017): a saturated value — any length at or beyond the cap — is out of range, a longer length below the
    cap is not; feature 6 reached its cap in training and keeps its range. A guard file written before the
    saturation limit (no ``saturation``) widens past the cap, as calibrated: it cannot refuse the saturated
    length (the parity bench's 40k-80k-token prompts, experiments/parity/README.md)."""
    stats = ObsStats.from_obs(lengths(5000, 40), "test: train")
    fit = lengths(2000, 41)
    fit[:4, 5] = 1.0  # 4 of 2,000 validation lengths beyond the cap: counted, the thresholds still met
    guard, record = calibrate(stats, SLICES, fit, lengths(2000, 42), log_norm=LOG_NORM, saturation=SATURATION)
    assert record["saturated_fit"] == 4 / 2000 and record["meets_target"]
    assert guard.below_cap[5] and not guard.below_cap[6]
    req = BLOCKS.index("request")
    base = lengths(300, 43)
    out0 = guard.scores(base)[1][:, req]
    sat, longer, other = base.copy(), base.copy(), base.copy()
    sat[:, 5] = 1.0
    longer[:, 5] = 0.95  # ~22k tokens: beyond training's ~9k, within the factor 4
    other[:, 6] = 1.0
    assert guard.scores(sat)[1][:, req].all()
    assert (guard.scores(longer)[1][:, req] == out0).all() and (guard.scores(other)[1][:, req] == out0).all()
    assert guard.check(sat[0])[0] and (OodGuard.from_json(guard.to_json()).flags(sat)).all()
    old = OodGuard.from_json({k: v for k, v in guard.to_json().items() if k != "saturation"})
    assert old.saturation == () and (old.scores(sat)[1][:, req] == out0).all()


@pytest.mark.parametrize("bad,message", [([[5]], "saturation must be"), ("cap", "saturation must be"),
                                         ([[99, 1.0]], "saturation index 99")])
def test_a_malformed_saturation_field_is_an_error_naming_it(bad: Any, message: str) -> None:
    stats = ObsStats.from_obs(lengths(500, 50), "test: train")
    guard = OodGuard(stats, SLICES, np.ones(3), log_norm=LOG_NORM, saturation=SATURATION)
    with pytest.raises(ValueError, match=message):
        OodGuard.from_json({**guard.to_json(), "saturation": bad})


def test_router_loads_an_old_guard_file_and_falls_back_on_a_malformed_one(tmp_path: Path) -> None:
    """The parity bench's exported policy: without ``saturation`` (a file written before it) the router
    loads it guarded, with the saturation limit off; with a malformed one the folder is ``policy_corrupt``,
    which the router answers with its fallback (``rlroute.serve.decision.load`` never raises)."""
    import json
    import shutil

    from rlroute.bench.parity import DEFAULT_POLICY
    from rlroute.serve.decision import load

    if not json.loads((DEFAULT_POLICY / "manifest.json").read_text()).get("ood"):
        pytest.skip(f"{DEFAULT_POLICY} has no OOD guard")
    for name, edit, reason in (("old", lambda o: o.pop("saturation", None), None),
                               ("bad", lambda o: o.update(saturation=[["x", 1.0]]), "policy_corrupt")):
        folder = tmp_path / name
        shutil.copytree(DEFAULT_POLICY, folder)
        m = json.loads((folder / "manifest.json").read_text())
        edit(m["ood"])
        (folder / "manifest.json").write_text(json.dumps(m))
        got = load(str(folder), None)
        assert got.reason == reason, got.detail
        if reason is None:
            assert got.policy is not None and got.policy.guard is not None and got.policy.guard.saturation == ()
        else:
            assert got.policy is None and "saturation" in (got.detail or "")


def test_the_guard_scores_the_traffic_and_the_fleet_not_the_routers_own_split_of_the_load() -> None:
    """With the schema's layout, a state only the router's routing can cause (the in-system share on the large
    pool, queues, what each pool caches) is not refused; an unhealthy worker, a new arrival rate or an unseen
    prompt length is (module doc: scored, the routed features made the fallback hold itself up)."""
    from rlroute.export.ood import guard_layout
    from rlroute.features.spec import build_schema

    schema = build_schema()
    lay = guard_layout(schema)
    idx = schema.index
    rng = np.random.default_rng(30)
    dim = len(schema.names)
    train = rng.normal(0.3, 0.05, size=(6000, dim)).astype(np.float32)
    guard, record = calibrate(ObsStats.from_obs(train[:4000], "test: train"), schema.slices, train[4000:5000],
                              train[5000:], 0.01, 0.25, lay["range_exempt"], lay["ignored"], lay["log_norm"])
    base = rng.normal(0.3, 0.05, size=(200, dim)).astype(np.float32)
    assert guard.flags(base).mean() <= 0.05
    routed = base.copy()
    for name in ("system.large_share", "system.load_diff", "system.small.queued_total", "system.large.ttft",
                 "cache.large.best_match_ratio", "cache.small.hit_rate"):
        routed[:, idx[name]] = 0.95
    np.testing.assert_array_equal(guard.flags(routed), guard.flags(base))
    for name in ("system.large.healthy_frac", "system.arrival_rate", "request.input_tokens"):
        shifted = base.copy()
        shifted[:, idx[name]] = 0.95
        assert guard.flags(shifted).all(), name


WINDOW = (3, 4)  # request features the window watches in these tests


@pytest.fixture(scope="module")
def windowed() -> tuple[OodGuard, dict[str, Any]]:
    stats = ObsStats.from_obs(gaussian(20_000, 0), "test: train")
    return calibrate(stats, SLICES, gaussian(3_000, 1), gaussian(3_000, 2), target_fpr=0.01, window=WINDOW)


def test_the_request_window_refuses_a_shift_whose_single_observations_are_typical(
        windowed: tuple[OodGuard, dict[str, Any]]) -> None:
    """Feature 3 moved by one training sigma: one observation at a time the guard passes nearly all of it; the
    window (recent mean vs training mean) refuses it once it has filled, and never refuses typical traffic."""
    guard, record = windowed
    assert guard.window is not None and record["meets_target"]
    assert record["window"]["fpr_holdout"] == 0.0 and record["window"]["threshold"] > record["window"]["fit_max"]
    shifted = gaussian(1_000, 20)
    shifted[:, 3] += 0.1
    drift, out = guard.scores(shifted)
    assert ((drift > 1).any(axis=1) | out.any(axis=1)).mean() < 0.1  # scored one at a time: mostly typical
    scores = guard.window.scores(shifted)
    np.testing.assert_array_equal(guard.flags(shifted)[200:], True)  # flags read the batch in order, windowed
    assert scores[0] < 1.0 and scores[:10].max() < 1.0  # a fresh window is damped: no refusal on chance
    assert (scores[200:] > 1.0).mean() > 0.95
    assert (guard.window.scores(gaussian(5_000, 21)) <= 1.0).all()
    report = fallback_rate({"ood": guard.to_json()}, shifted)
    assert report["window"] > 0.8 and report["rate"] >= report["window"]


def test_the_window_is_stateful_per_decision_and_round_trips(windowed: tuple[OodGuard, dict[str, Any]]) -> None:
    guard, _ = windowed
    assert guard.window is not None
    shifted = gaussian(400, 22)
    shifted[:, 4] -= 0.15
    again = OodGuard.from_json(guard.to_json())
    assert again.window is not None and again.window.dims == WINDOW
    live = [again.window.update(x) for x in shifted]
    np.testing.assert_allclose(live, guard.window.scores(shifted), rtol=1e-12)
    assert again.window.score == live[-1] > 1.0 and again.window.n == len(shifted)
    np.testing.assert_allclose(again.window.scores(shifted[:5]), live[:5], rtol=1e-12)  # scores() is fresh
    assert again.window.n == len(shifted)  # ... and leaves the live state alone
    again.window.reset()
    assert again.window.update(shifted[0]) == live[0]
    looser = OodGuard.from_json(guard.to_json(), scale=2.0)
    assert looser.window is not None and looser.window.threshold == 2.0 * guard.window.threshold
    old = {k: v for k, v in guard.to_json().items() if k != "window"}  # exported before the window
    assert OodGuard.from_json(old).window is None
    for bad in ({"dims": [3], "threshold": 0.0, "halflife": 64}, {"dims": [99], "threshold": 1.0, "halflife": 64},
                {"threshold": 1.0}):
        with pytest.raises(ValueError, match="ood.window"):
            OodGuard.from_json({**guard.to_json(), "window": bad})
