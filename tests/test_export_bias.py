"""``manifest.action_bias`` (a deployment calibration of an exported policy's large share) and its tuning on
a validation split (``rlroute.export.bias``)."""

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


def _with_bias(dst: Path, bias: object) -> Path:
    shutil.copytree(DEFAULT_POLICY, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["action_bias"] = bias
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_action_bias_is_added_to_the_logits_everywhere_the_folder_is_loaded(tmp_path: Path) -> None:
    plain = OnnxPolicy(DEFAULT_POLICY, ood=False)
    obs = np.random.default_rng(0).uniform(0, 1, size=(200, plain.obs_dim)).astype(np.float32)
    before = [plain.decide(x).action for x in obs]
    rare = min(Action, key=before.count)  # an action the plain policy chooses least
    bias = {rare.name.lower(): 50.0, "small" if rare != Action.SMALL else "large": -1.0}
    biased = OnnxPolicy(_with_bias(tmp_path / "b", bias), ood=False)
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
    folder = _with_bias(tmp_path / "b", bias)
    with pytest.raises(PolicyLoadError) as err:
        OnnxPolicy(folder)
    assert err.value.reason == "policy_corrupt" and "action_bias" in str(err.value)


def test_tune_action_bias_picks_the_best_offset_on_validation_and_records_the_sweep(tmp_path: Path) -> None:
    from rlroute.env.build import default_config
    from rlroute.eval.run import evaluate
    from rlroute.export.bias import tune_action_bias
    from rlroute.study.served import served_policy

    cfg = default_config(["episode_length=48"])
    # without its guard (calibrated for the parity bench's cluster, it refuses most decisions here) the
    # policy decides every request, so the offset shows in the decisions
    src = tmp_path / "policy"
    shutil.copytree(DEFAULT_POLICY, src)
    m = json.loads((src / "manifest.json").read_text())
    del m["ood"]
    (src / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "calibrated"
    with pytest.raises(ValueError, match="never test"):
        tune_action_bias(src, cfg, out, split="test")
    rec = tune_action_bias(src, cfg, out, seeds=[1000], grid=[-8.0, 32.0])
    assert rec["grid"] == [-8.0, 0.0, 32.0] and rec["split"] == "val"  # 0 (as trained) always tried
    rewards = {float(b): r for b, r in rec["val_reward_by_bias"].items()}
    assert rec["chosen"] == max(rewards, key=lambda b: (rewards[b], -abs(b)))
    shares = {float(b): x for b, x in rec["val_large_share_by_bias"].items()}
    assert shares[32.0] < shares[0.0] < shares[-8.0]  # a larger small-action offset, fewer strong calls
    m = json.loads((out / "manifest.json").read_text())
    assert m["action_bias"] == {"small": rec["chosen"]} and m["action_bias_tuning"] == rec
    assert "action_bias" not in json.loads((src / "manifest.json").read_text())  # source unchanged
    # the chosen folder scores on val what the sweep recorded for its offset
    res = evaluate(served_policy(out, "calibrated"), cfg, "val", [1000], reference_cost={})
    assert float(np.mean([x["reward"] for x in res.per_seed])) == pytest.approx(rewards[rec["chosen"]])

