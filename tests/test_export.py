"""Export round trip: a PPO / MaskablePPO run folder -> policy.onnx + manifest, verified against SB3.

The "run folder" is what ``rlroute train`` writes (model.zip + vecnormalize.pkl + config.yaml +
metrics.json), built here from a freshly initialised policy on the real env's spaces and VecNormalize
statistics fitted on observations recorded from the real env, so the baked normalisation is exercised.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlroute.export.cli import export_policy
from rlroute.export.manifest import ACTION_MAP, MANIFEST_FILE, ONNX_FILE, sha256_file
from rlroute.export.verify import ExportVerificationError, Recorded, record_observations, torch_reference

REPO = Path(__file__).resolve().parents[1]
N_OBS = 10_000


def compose_cfg(*overrides: str) -> Any:
    """The project's root config, composed as the CLI composes it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def cfg() -> Any:
    return compose_cfg("episode_length=256")


@pytest.fixture(scope="module")
def recorded(cfg: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Recorded, Path]:
    """10,000 observations (and masks) recorded from the real env with random allowed actions."""
    from rlroute.env import build_env

    env = build_env(cfg, split="val")
    rec = record_observations(env, N_OBS, seed=123)
    env.close()
    path = tmp_path_factory.mktemp("obs") / "obs.npz"
    np.savez(path, obs=rec.obs, **({"masks": rec.masks} if rec.masks is not None else {}))
    return rec, path


def make_run(cfg: Any, rec: Recorded, algo: str, folder: Path) -> Any:
    """A run folder like ``rlroute train`` writes, from an untrained policy and fitted VecNormalize stats."""
    from omegaconf import OmegaConf
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from rlroute.env import build_env
    from rlroute.export.cli import fresh_model

    model = fresh_model(cfg, algo, seed=7)
    # A fresh actor's last layer has gain 0.01 (near-tied logits); scale it so actions are decided.
    with torch.no_grad():
        model.policy.action_net.weight.mul_(100.0)
    folder.mkdir(parents=True)
    model.save(folder / "model.zip")
    vn = VecNormalize(DummyVecEnv([lambda: build_env(cfg, split="train")]), norm_reward=False, clip_obs=5.0)
    vn.obs_rms.mean = rec.obs.astype(np.float64).mean(axis=0)
    vn.obs_rms.var = rec.obs.astype(np.float64).var(axis=0)
    vn.save(str(folder / "vecnormalize.pkl"))
    vn.close()
    OmegaConf.save(cfg, folder / "config.yaml")
    (folder / "metrics.json").write_text(json.dumps({"eval/reward_mean": 1.25}))
    return model


@pytest.fixture(scope="module", params=["PPO", "MaskablePPO"])
def exported(request: pytest.FixtureRequest, cfg: Any, recorded: tuple[Recorded, Path],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, Path, Path]:
    algo = request.param
    rec, obs_file = recorded
    base = tmp_path_factory.mktemp(algo)
    model = make_run(cfg, rec, algo, base / "run")
    export_policy(base / "policy", cfg, run_dir=base / "run", n_verify=N_OBS, obs_file=str(obs_file))
    return algo, model, base / "run", base / "policy"


def test_round_trip_onnx_matches_torch(exported: tuple[str, Any, Path, Path],
                                       recorded: tuple[Recorded, Path]) -> None:
    algo, _, run_dir, folder = exported
    rec, _ = recorded
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    v = manifest["verification"]
    assert v["n_obs"] >= N_OBS and v["passed"] and v["action_agreement"] == 1.0
    assert v["max_abs_logit_diff"] <= 1e-5
    assert v["masked"] == (algo == "MaskablePPO")
    # Independent re-check: a freshly loaded SB3 model vs onnxruntime on the recorded observations.
    import onnxruntime as ort

    from rlroute.export.graph import load_run
    from rlroute.policies.onnx import masked_argmax

    model, norm, got_algo = load_run(run_dir)
    assert got_algo == algo and norm.enabled and norm.clip == 5.0
    ref_actions, ref_logits, _ = torch_reference(model, norm, rec, algo)
    logits = ort.InferenceSession(str(folder / ONNX_FILE)).run(None, {"obs": rec.obs})[0]
    assert np.abs(logits - ref_logits).max() <= 1e-5
    masks = rec.masks if algo == "MaskablePPO" else None
    np.testing.assert_array_equal(masked_argmax(logits, masks), ref_actions)
    assert len(np.unique(ref_actions)) >= 2, "test policy should not be constant"


def test_manifest_contents(exported: tuple[str, Any, Path, Path]) -> None:
    from rlroute.features import SCHEMA

    algo, _, run_dir, folder = exported
    m = json.loads((folder / MANIFEST_FILE).read_text())
    assert m["feature_schema"] == {"version": SCHEMA.version, "hash": SCHEMA.hash, "dim": 224, "text": "hash"}
    assert m["action_map"] == ACTION_MAP == {"0": "large", "1": "small", "2": "hybrid"}
    assert m["env"] == {"id": "rlroute/Routing-v1", "version": 1}
    assert m["onnx"]["sha256"] == sha256_file(folder / ONNX_FILE)
    assert m["onnx"]["obs_dim"] == 224 and m["onnx"]["n_actions"] == 3
    norm = m["obs_norm"]
    assert norm["enabled"] and norm["baked_into_graph"] and norm["clip"] == 5.0
    assert len(norm["mean"]) == len(norm["var"]) == 224 and norm["epsilon"] > 0
    assert m["source"] == {"run_dir": str(run_dir), "algo": algo, "masked": algo == "MaskablePPO", "fresh": False}
    assert m["metrics"] == {"eval/reward_mean": 1.25}
    assert m["training_config"]["episode_length"] == 256
    assert dt.datetime.fromisoformat(m["created_at"]).tzinfo is not None


def test_export_refuses_a_graph_that_disagrees(cfg: Any, recorded: tuple[Recorded, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph that drifts from SB3 by more than the tolerance fails loudly and writes nothing."""
    from rlroute.export import graph

    rec, obs_file = recorded
    make_run(cfg, rec, "PPO", tmp_path / "run")
    real_forward = graph.OnnxableActor.forward
    monkeypatch.setattr(graph.OnnxableActor, "forward", lambda self, obs: real_forward(self, obs) + 1e-3)
    with pytest.raises(ExportVerificationError, match="max \\|logit diff\\|"):
        export_policy(tmp_path / "policy", cfg, run_dir=tmp_path / "run", n_verify=500, obs_file=str(obs_file))
    assert not (tmp_path / "policy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".policy.")], "temp folder left behind"


def test_cli_fresh_export_records_from_env(tmp_path: Path) -> None:
    """`rlroute export fresh=true ...` through the real CLI in a fresh interpreter: Hydra config, env
    recording, verification -- and none of torch's own export noise (torchvision, FutureWarning) printed,
    with every warning shown (``-W default``)."""
    out = tmp_path / "fresh"
    proc = subprocess.run([sys.executable, "-W", "default", "-m", "rlroute.cli", "export", "fresh=true", f"out={out}",
                           "n_verify=300", "episode_length=128", f"hydra.run.dir={tmp_path / 'hydra'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout + proc.stderr
    assert "torchvision" not in printed and "Warning" not in printed, printed
    m = json.loads((out / MANIFEST_FILE).read_text())
    assert m["source"]["fresh"] and m["verification"]["n_obs"] == 300
    assert m["verification"]["obs_source"].startswith("env:rlroute/Routing-v1")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_policy(out, compose_cfg(), fresh=True, n_verify=10)


def test_onnx_and_sb3_expose_the_same_apgr_score(exported: tuple[str, Any, Path, Path],
                                                 recorded: tuple[Recorded, Path]) -> None:
    """Both learned-policy forms give RouteLLM's sweep the same score: P(large) + P(hybrid)."""
    from types import SimpleNamespace

    from rlroute.policies.onnx import OnnxPolicy
    from rlroute.policies.sb3 import SB3Policy
    from rlroute.train.envs import load_normalize

    _, model, run_dir, folder = exported
    rec, _ = recorded
    onnx = OnnxPolicy(folder)
    sb3 = SB3Policy.from_model(model, load_normalize(run_dir / "vecnormalize.pkl"))
    for i in range(0, 200, 7):
        mask = rec.masks[i] if rec.masks is not None else None
        ctx = SimpleNamespace(obs=rec.obs[i], mask=mask)
        probs = sb3.action_probs(rec.obs[i])
        assert onnx.action_probs(rec.obs[i]) == pytest.approx(probs, abs=1e-5)
        assert onnx.score(ctx) == pytest.approx(sb3.score(ctx), abs=1e-5)  # type: ignore[arg-type]
        assert 0.0 <= sb3.score(ctx) <= 1.0  # type: ignore[arg-type]


def test_run_without_vecnormalize_gets_its_guard_from_the_given_observations(
        cfg: Any, recorded: tuple[Recorded, Path], tmp_path: Path) -> None:
    """A run saved without VecNormalize (e.g. an actor fitted outside SB3's loop) and given training and
    calibration observations exports a guard built from them (it had none: experiments/parity/make_policy.py
    hit KeyError 'ood'); calibrating without any training statistics names what is missing."""
    from rlroute.export.cli import fresh_model

    rec, obs_file = recorded
    run = tmp_path / "run"
    run.mkdir()
    fresh_model(cfg, "PPO", seed=3).save(run / "model.zip")
    half = len(rec.obs) // 2
    train, calib = tmp_path / "train.npy", tmp_path / "calib.npy"
    np.save(train, rec.obs[:half])
    np.save(calib, rec.obs[half:])
    m = export_policy(tmp_path / "policy", cfg, run_dir=run, n_verify=500, obs_file=str(obs_file),
                      ood={"obs_file": str(train), "calib_file": str(calib)})
    assert m["ood"]["calibration"]["split"] == f"file:{calib}" and m["ood"]["stats"]["source"] == f"file:{train}"
    from rlroute.export.cli import ood_section

    with pytest.raises(ValueError, match="ood.obs_file"):  # calibration without any training statistics
        ood_section(cfg, None, "hash", lambda obs, mask: 1, {"calib_file": str(calib)}, seed=0)
