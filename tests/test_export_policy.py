"""OnnxPolicy: loading errors with reasons, the guard, and acting like the torch policy it came from."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlroute.cluster.base import ClusterState, InstanceState, PoolState
from rlroute.export.cli import export_policy, fresh_model
from rlroute.export.manifest import MANIFEST_FILE, ONNX_FILE, PolicyLoadError, SchemaId
from rlroute.policies.onnx import OnnxPolicy, PolicyInferenceError, guard, masked_argmax
from rlroute.types import Action

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg() -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=["episode_length=128"])


@pytest.fixture(scope="module")
def run_and_policy(cfg: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A PPO run folder (untrained, scaled action head, no VecNormalize) and its verified export."""
    from omegaconf import OmegaConf

    base = tmp_path_factory.mktemp("onnxpolicy")
    model = fresh_model(cfg, "PPO", seed=3)
    with torch.no_grad():
        model.policy.action_net.weight.mul_(100.0)
    (base / "run").mkdir()
    model.save(base / "run" / "model.zip")
    OmegaConf.save(cfg, base / "run" / "config.yaml")
    export_policy(base / "policy", cfg, run_dir=base / "run", n_verify=1000)
    return base / "run", base / "policy"


def _damage(name: str) -> Callable[[Path], None]:
    def drop(file: str) -> Callable[[Path], None]:
        return lambda p: (p / file).unlink()

    def edit_manifest(fn: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
        def go(p: Path) -> None:
            m = json.loads((p / MANIFEST_FILE).read_text())
            fn(m)
            (p / MANIFEST_FILE).write_text(json.dumps(m))

        return go

    def truncate_onnx(p: Path) -> None:
        data = (p / ONNX_FILE).read_bytes()
        (p / ONNX_FILE).write_bytes(data[: len(data) // 2])

    def garbage_onnx_with_matching_hash(p: Path) -> None:
        from rlroute.export.manifest import sha256_file

        (p / ONNX_FILE).write_bytes(b"not an onnx graph")
        edit_manifest(lambda m: m["onnx"].update(sha256=sha256_file(p / ONNX_FILE)))(p)

    cases: dict[str, Callable[[Path], None]] = {
        "no_folder": lambda p: shutil.rmtree(p),
        "no_manifest": drop(MANIFEST_FILE),
        "no_onnx": drop(ONNX_FILE),
        "manifest_not_json": lambda p: (p / MANIFEST_FILE).write_text('{"format_version": 1,'),
        "manifest_missing_field": edit_manifest(lambda m: m.pop("obs_norm")),
        "manifest_wrong_type": edit_manifest(lambda m: m.update(metrics=[1, 2])),
        "onnx_truncated": truncate_onnx,
        "onnx_garbage": garbage_onnx_with_matching_hash,
        "schema_hash": edit_manifest(lambda m: m["feature_schema"].update(hash="0" * 64)),
        "schema_dim": edit_manifest(lambda m: m["feature_schema"].update(dim=200)),
    }
    return cases[name]


@pytest.mark.parametrize(
    ("damage", "reason", "message"),
    [
        ("no_folder", "policy_missing", "does not exist"),
        ("no_manifest", "policy_missing", "manifest.json does not exist"),
        ("no_onnx", "policy_missing", "policy.onnx does not exist"),
        ("manifest_not_json", "policy_corrupt", "not valid JSON"),
        ("manifest_missing_field", "policy_corrupt", "missing field 'obs_norm'"),
        ("manifest_wrong_type", "policy_corrupt", "field 'metrics'"),
        ("onnx_truncated", "policy_corrupt", "sha256"),
        ("onnx_garbage", "policy_corrupt", "onnxruntime cannot load"),
        ("schema_hash", "schema_mismatch", "feature schema"),
        ("schema_dim", "schema_mismatch", "dim 200"),
    ],
)
def test_load_errors_carry_a_reason(run_and_policy: tuple[Path, Path], tmp_path: Path,
                                    damage: str, reason: str, message: str) -> None:
    folder = tmp_path / "p"
    shutil.copytree(run_and_policy[1], folder)
    _damage(damage)(folder)
    with pytest.raises(PolicyLoadError, match=message) as err:
        OnnxPolicy(folder)
    assert err.value.reason == reason


def test_running_schema_differs_from_manifest(run_and_policy: tuple[Path, Path]) -> None:
    with pytest.raises(PolicyLoadError) as err:
        OnnxPolicy(run_and_policy[1], schema=SchemaId(version="99", hash="f" * 64, dim=224))
    assert err.value.reason == "schema_mismatch"


def _state(large: tuple[bool, bool] = (True, False), small: tuple[bool, bool] = (True, False)) -> ClusterState:
    """One-instance pools with the given (healthy, paused)."""
    return ClusterState(0.0, {
        "large": PoolState("large", [InstanceState(0, healthy=large[0], paused=large[1])]),
        "small": PoolState("small", [InstanceState(0, healthy=small[0], paused=small[1])]),
    })


@pytest.mark.parametrize(
    ("logits", "mask", "state", "action", "reason"),
    [
        ([1.0, 2.0, 0.0], None, None, Action.SMALL, None),
        ([1.0, 2.0, 0.0], [True, False, True], None, Action.LARGE, None),
        ([np.nan, 2.0, 0.0], None, None, None, "non_finite"),
        ([np.inf, 2.0, 0.0], None, None, None, "non_finite"),
        ([1.0, 2.0, 0.0], [False, False, False], None, None, "no_allowed_action"),
        ([3.0, 2.0, 0.0], None, _state(large=(False, False)), Action.LARGE, "pool_unavailable"),
        ([0.0, 2.0, 3.0], None, _state(small=(True, True)), Action.HYBRID, "pool_unavailable"),
        ([0.0, 2.0, 1.0], None, _state(large=(True, True)), Action.SMALL, None),
    ],
)
def test_guard(logits: list[float], mask: list[bool] | None, state: ClusterState | None,
               action: Action | None, reason: str | None) -> None:
    d = guard(np.asarray(logits, dtype=np.float32), None if mask is None else np.asarray(mask), state)
    assert (d.action, d.reason) == (action, reason)


def test_masked_argmax_batched_matches_per_row() -> None:
    rng = np.random.default_rng(0)
    logits, masks = rng.normal(size=(64, 3)), rng.random((64, 3)) < 0.6
    masks[:, 1] = True
    per_row = [int(np.argmax(np.where(m, row, -np.inf))) for row, m in zip(logits, masks, strict=True)]
    assert masked_argmax(logits, masks).tolist() == per_row


def test_onnx_policy_acts_like_the_torch_policy(cfg: Any, run_and_policy: tuple[Path, Path]) -> None:
    """On decision contexts of the real env, OnnxPolicy and SB3Policy (the run folder) choose alike."""
    from rlroute.env import build_env
    from rlroute.policies.sb3 import SB3Policy

    run_dir, folder = run_and_policy
    # The graph against torch: random-action test-split observations are not this policy's distribution,
    # so the OOD guard (tested in test_ood.py / test_serve_ood.py) is off here.
    onnx_policy, torch_policy = OnnxPolicy(folder, ood=False), SB3Policy(run_dir)
    env = build_env(cfg, split="test")
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    chosen = []
    for _ in range(200):
        ctx = env.decision_context()
        a = onnx_policy.act(ctx)
        assert a == torch_policy.act(ctx)
        assert onnx_policy.last is not None and onnx_policy.last.reason is None
        chosen.append(int(a))
        _, _, term, trunc, _ = env.step(int(rng.integers(3)))
        if term or trunc:
            env.reset(seed=6)
    env.close()
    assert not onnx_policy.fallbacks and len(set(chosen)) >= 2


def test_non_finite_observation_goes_to_fallback(cfg: Any, run_and_policy: tuple[Path, Path]) -> None:
    from rlroute.env import build_env
    from rlroute.policies.heuristic import SeedHeuristic

    env = build_env(cfg, split="test")
    env.reset(seed=1)
    ctx = env.decision_context()
    ctx.obs = np.full_like(ctx.obs, np.nan)
    with_fallback = OnnxPolicy(run_and_policy[1], fallback=SeedHeuristic())
    assert with_fallback.act(ctx) == SeedHeuristic().act(ctx)
    assert with_fallback.fallbacks == {"non_finite": 1}
    with pytest.raises(PolicyInferenceError, match="non_finite"):
        OnnxPolicy(run_and_policy[1]).act(ctx)
    wrong_size = OnnxPolicy(run_and_policy[1]).decide(np.zeros(10, dtype=np.float32))
    assert wrong_size.reason == "inference_error" and wrong_size.action is None
    env.close()


def test_bench_decision_runs_on_an_exported_policy(cfg: Any, run_and_policy: tuple[Path, Path]) -> None:
    """`rlroute bench decision`'s measurement on a tiny budget: stages reported, nothing refused."""
    from rlroute.bench.decision import run

    result = run(run_and_policy[1], cfg, iters=200, warm_steps=20, seed=0)
    assert result["unit"] == "us_p99_per_decision" and result["value"] == result["p99_us"] > 0
    for stage in ("features", "ood_score", "onnx_inference", "guard", "features_request_block_memoised"):
        assert 0 < result[stage]["p50_us"] <= result[stage]["p99_us"]
    assert result["guard_refusals"] == {} and result["request"]["input_len"] > 0
    assert result["ood_guarded"] and 0 <= result["ood_refusals"] <= 200
