"""``manifest.action_bias`` and ``manifest.fallback`` (a deployment calibration of an exported policy's large
share and of the rule its guard falls back to) and their tuning on a validation split (``rlroute.export.bias``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rlroute.bench.parity import DEFAULT_POLICY
from rlroute.export.manifest import PolicyLoadError
from rlroute.policies.onnx import OnnxPolicy
from rlroute.types import Action


def _with(dst: Path, **fields: object) -> Path:
    shutil.copytree(DEFAULT_POLICY, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m.update(fields)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_action_bias_is_added_to_the_logits_everywhere_the_folder_is_loaded(tmp_path: Path) -> None:
    plain = OnnxPolicy(DEFAULT_POLICY, ood=False)
    obs = np.random.default_rng(0).uniform(0, 1, size=(200, plain.obs_dim)).astype(np.float32)
    before = [plain.decide(x).action for x in obs]
    rare = min(Action, key=before.count)  # an action the plain policy chooses least
    bias = {rare.name.lower(): 50.0, "small" if rare != Action.SMALL else "large": -1.0}
    biased = OnnxPolicy(_with(tmp_path / "b", action_bias=bias), ood=False)
    vec = np.zeros(3, dtype=np.float32)
    for name, v in bias.items():
        vec[int(Action[name.upper()])] = v
    for x in obs:
        want = plain.logits(x) + vec
        assert np.array_equal(biased.logits(x), want)
        assert biased.decide(x).action == Action(int(np.argmax(want))) == rare
        assert biased.action_probs(x)[int(rare)] >= plain.action_probs(x)[int(rare)]
    assert before.count(rare) < len(obs)  # so the offset changed decisions


@pytest.mark.parametrize("bias", [{"smal": 1.0}, {"small": "1"}, {"small": float("nan")}, [1.0, 0.0, 0.0],
                                  {"small": True}])
def test_a_malformed_action_bias_refuses_the_folder(tmp_path: Path, bias: object) -> None:
    folder = _with(tmp_path / "b", action_bias=bias)
    with pytest.raises(PolicyLoadError) as err:
        OnnxPolicy(folder)
    assert err.value.reason == "policy_corrupt" and "action_bias" in str(err.value)


@pytest.mark.parametrize("fallback", ["threshold", "", 1, "all_smal"])
def test_a_malformed_fallback_refuses_the_folder(tmp_path: Path, fallback: object) -> None:
    with pytest.raises(PolicyLoadError) as err:
        OnnxPolicy(_with(tmp_path / "f", fallback=fallback))
    assert err.value.reason == "policy_corrupt" and "fallback" in str(err.value)


def test_the_manifest_fallback_decides_what_the_guard_refuses_in_the_router(tmp_path: Path) -> None:
    from rlroute.policies.registry import make_policy
    from rlroute.serve.decision import load

    obs = np.random.default_rng(1).uniform(0, 1, size=(20, OnnxPolicy(DEFAULT_POLICY).obs_dim)).astype(np.float32)
    for named, caller in (("all_large", "all_small"), ("all_small", "all_large")):
        loaded = load(str(_with(tmp_path / named, fallback=named)), None, fallback=make_policy(caller))
        policy = loaded.policy
        assert policy is not None and type(policy.fallback).__name__ == type(make_policy(named)).__name__
    plain = load(str(DEFAULT_POLICY), None, fallback=make_policy("all_large")).policy
    assert plain is not None and type(plain.fallback).__name__ == "AllLarge"  # no manifest fallback: the caller's
    assert all(plain.decide(x).reason is not None for x in obs)  # uniform noise: refused by the guard


def _unguarded(dst: Path) -> Path:
    """The parity policy without its guard (calibrated for the parity bench's cluster, it refuses most
    decisions on the default one), so it decides every request and an offset shows in the decisions."""
    shutil.copytree(DEFAULT_POLICY, dst)
    m = json.loads((dst / "manifest.json").read_text())
    del m["ood"]
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_tune_action_bias_picks_the_best_offset_on_validation_and_records_the_sweep(tmp_path: Path) -> None:
    from rlroute.env.build import default_config
    from rlroute.eval.run import evaluate
    from rlroute.export.bias import tune_action_bias
    from rlroute.study.served import served_policy

    cfg = default_config(["episode_length=48"])
    src = _unguarded(tmp_path / "policy")
    out = tmp_path / "calibrated"
    with pytest.raises(ValueError, match="never test"):
        tune_action_bias(src, cfg, out, split="test")
    with pytest.raises(ValueError, match="fallbacks must be among"):
        tune_action_bias(src, cfg, out, fallbacks=["threshold"])
    rec = tune_action_bias(src, cfg, out, seeds=[1000], grid=[-8.0, 32.0], fallbacks=["heuristic", "all_small"])
    assert rec["grid"] == [-8.0, 0.0, 32.0] and rec["split"] == "val"  # 0 (as trained) always tried
    # no guard, nothing refused: the second fallback is recorded, not run again
    assert [(r["bias"], r["fallback"], r["evaluated"]) for r in rec["sweep"]] == [
        (b, f, f == "heuristic") for b in (-8.0, 0.0, 32.0) for f in ("heuristic", "all_small")]
    rewards = {r["bias"]: r["reward"] for r in rec["sweep"]}
    assert (rec["chosen"], rec["chosen_fallback"]) == (max(rewards, key=lambda b: (rewards[b], -abs(b))), "heuristic")
    shares = {r["bias"]: r["large_share"] for r in rec["sweep"]}
    assert shares[32.0] < shares[0.0] < shares[-8.0]  # a larger small-action offset, fewer strong calls
    m = json.loads((out / "manifest.json").read_text())
    assert m["action_bias"] == {"small": rec["chosen"]} and m["action_bias_tuning"] == rec
    assert m["fallback"] == "heuristic"
    assert "action_bias" not in json.loads((src / "manifest.json").read_text())  # source unchanged
    # the chosen folder scores on val what the sweep recorded for its offset
    res = evaluate(served_policy(out, "calibrated"), cfg, "val", [1000], reference_cost={})
    assert float(np.mean([x["reward"] for x in res.per_seed])) == pytest.approx(rewards[rec["chosen"]])


def test_tune_action_bias_chooses_the_fallback_where_the_guard_refuses(tmp_path: Path) -> None:
    from rlroute.env.build import default_config
    from rlroute.eval.run import evaluate
    from rlroute.export.bias import tune_action_bias
    from rlroute.study.served import served_policy

    cfg = default_config(["episode_length=48"])
    out = tmp_path / "calibrated"
    rules = ["heuristic", "all_small", "all_large"]
    rec = tune_action_bias(DEFAULT_POLICY, cfg, out, seeds=[1000], grid=[0.0], fallbacks=rules)
    rows = {r["fallback"]: r for r in rec["sweep"]}
    assert all(r["evaluated"] and r["fallback_rate"] > 0.5 for r in rows.values())  # the guard refuses most here
    assert rows["all_large"]["large_share"] > rows["all_small"]["large_share"]  # the fallback's decisions show
    best = max(rules, key=lambda f: (rows[f]["reward"], -rules.index(f)))
    assert rec["chosen_fallback"] == best and json.loads((out / "manifest.json").read_text())["fallback"] == best
    # served as the study and the router serve it (the caller's heuristic replaced by the folder's choice)
    res = evaluate(served_policy(out, "calibrated"), cfg, "val", [1000], reference_cost={})
    assert float(np.mean([x["reward"] for x in res.per_seed])) == pytest.approx(rows[best]["reward"])
