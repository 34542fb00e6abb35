"""GPU-profiling pipeline (experiments/profiling): explicit Qwen3 stages, step-model fit, profile files."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

PROFILING = Path(__file__).resolve().parents[1] / "experiments" / "profiling"
sys.path.insert(0, str(PROFILING))

import fit_profiles as fp  # noqa: E402
import qwen3_ops as q3  # noqa: E402

pytest.importorskip("transformers")


@pytest.mark.parametrize("model", ["tiny-dense", "tiny-moe"])
def test_explicit_stages_compute_the_transformers_layer(model: str) -> None:
    cfg = q3.build_config(model)
    layer = q3.build_hf_layer(cfg, 0, torch.device("cpu"), seed=3)
    w = q3.weights_from_hf_layer(layer)
    spec = q3.MODEL_SPECS[model]
    assert q3.check_against_hf(spec, layer, w, 32, contextlib.nullcontext) < 2e-2
    # the check must fail when the stages compute something else: swap the k-norm gain
    w.k_norm = w.k_norm * 3.0
    assert q3.check_against_hf(spec, layer, w, 32, contextlib.nullcontext) > 2e-2


def test_fit_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([4e-3, 2e-5, 3e-5, 5e-8])
    x = np.c_[np.ones(40), rng.integers(0, 8192, 40), rng.integers(0, 256, 40), rng.integers(0, 500_000, 40)]
    beta = fp.fit_step_model(x.astype(float), x @ truth)
    np.testing.assert_allclose(beta, truth, rtol=1e-6)


@pytest.mark.parametrize(("n_seqs", "seq_len", "expected"), [(1, 4, 10.0), (16, 512, 16 * 512 * 513 / 2)])
def test_prefill_pairs_match_the_simulator_rule(n_seqs: int, seq_len: int, expected: float) -> None:
    from rlroute.cluster.profiles import chunk_pairs

    shape = {"n_seqs": n_seqs, "seq_len": seq_len, "prefill_tokens": n_seqs * seq_len}
    assert fp.prefill_pairs(shape) == expected == n_seqs * chunk_pairs(seq_len)
    assert fp.prefill_pairs({"n_seqs": 8, "seq_len": 1, "prefill_tokens": 0}) == 0.0  # decode-only


@pytest.mark.parametrize("tokens,expected", [(1, 8.0), (10_000, 128.0)])
def test_experts_touched_limits(tokens: int, expected: float) -> None:
    assert fp.experts_touched(np.array([tokens]), 128, 8)[0] == pytest.approx(expected, rel=1e-6)


def test_committed_profiles_are_reproduced_by_the_fit(tmp_path: Path) -> None:
    if not (fp.RESULTS / "run1_measurements.json").is_file():
        pytest.skip("no committed measurements in experiments/profiling/results")
    assert fp.main(["--profiles-dir", str(tmp_path), "--out-dir", str(tmp_path)]) == 0
    from rlroute.cluster.profiles import load_profile

    for stem in ("qwen3-4b__h100", "qwen3-8b__h100", "qwen3-30b-a3b__h100", "qwen3-235b-a22b-fp8__h100x8",
                 "qwen3-4b__h200", "qwen3-8b__h200"):
        fresh, committed = load_profile(stem, tmp_path), load_profile(stem)
        assert fresh.status in ("measured", "derived") and committed.status == fresh.status
        assert (fresh.a, fresh.b, fresh.c, fresh.d) == (committed.a, committed.b, committed.c, committed.d)
        assert fresh.ext is not None and fresh.ext == committed.ext  # the extended model the simulator runs
        fit = yaml.safe_load(Path(fresh.path).read_text())["fit"]
        assert fit["heldout_points"] > 0 and 0 <= fit["heldout_median_rel_error"] < 0.2
        # the simulator's own step_time (rounded file coefficients) on the held-out shapes: issue 8's target
        assert fit["simulator_model"] == f"step_time_{fresh.ext.kind}"
        assert 0 < fit["simulator_heldout_median_rel_error"] <= 0.10
    summary = json.loads((tmp_path / "fit_summary.json").read_text())
    assert summary["qwen3-4b__h100"]["points"] > 10 and summary["qwen3-4b__h200"]["points"] > 10
    assert load_profile("qwen3-4b__h200").gpu == "NVIDIA H200" and load_profile("qwen3-4b__h100").gpu.startswith("NVIDIA H100")


def test_tiny_profiling_run_on_cpu(tmp_path: Path) -> None:
    import profile_models as pm

    assert pm.main(["--tiny", "--out", str(tmp_path), "--runs", "1", "--reps", "1"]) == 0
    data = json.loads((tmp_path / "measurements.json").read_text())
    entry = data["models"]["tiny-moe"]
    assert entry["hf_check_rel_err"] < 2e-2 and not entry["skipped"]
    modes = {s["mode"] for s in entry["shapes"]}
    assert modes == {"prefill", "decode", "mixed"}
    for s in entry["shapes"]:
        assert s["step_ms"] > 0 and s["composed_ms"] > 0 and s["finite_logits"]
        assert s["prefill_tokens"] + s["decode_seqs"] > 0


def test_deployable_profiles_are_reproduced_by_their_derivation(tmp_path: Path) -> None:
    if not (fp.RESULTS / fp.DERIVED_FILE).is_file():
        pytest.skip("no committed measurements in experiments/profiling/results")
    import derive_deployments as dd

    assert dd.main(["--profiles-dir", str(tmp_path)]) == 0
    from rlroute.cluster.profiles import load_profile

    for dep in dd.DEPLOYMENTS.values():
        fresh, committed = load_profile(dep["stem"], tmp_path), load_profile(dep["stem"])
        assert fresh.status == committed.status == "derived" and fresh.num_gpus == dep["gpus"]
        assert (fresh.a, fresh.b, fresh.c, fresh.d, fresh.ext) == (committed.a, committed.b, committed.c, committed.d,
                                                                   committed.ext)
        assert fresh.kv_bytes_per_token == 94 * 128 * 2 * 2 * dep["gpus"] and fresh.overhead_gb_per_gpu == 1.0
        fit = yaml.safe_load(Path(fresh.path).read_text())["fit"]
        assert 0 < fit["simulator_heldout_median_rel_error"] <= 0.10


def test_h200_profile_rests_on_the_measured_tp4_rank(tmp_path: Path) -> None:
    import derive_deployments as dd

    if not (fp.RESULTS / dd.DEPLOYMENTS["tp4_h200"]["file"]).is_file():
        pytest.skip("no committed H200 measurements in experiments/profiling/results")
    dep = dd.DEPLOYMENTS["tp4_h200"]
    shape = fp.load(dep["file"])["models"][dep["rank"]]["shapes"][0]
    assert dd.rank_ops(shape, "tp4_h200") == shape["ops"]  # nothing rescaled: the rank was measured
    doc = yaml.safe_load((fp.PROFILE_DIR / f"{dep['stem']}.derived.yaml").read_text())
    assert doc["gpu"] == "NVIDIA H200" and doc["derivation"]["measured_rank"] == "qwen3-235b-a22b-tp4-rank"
    assert "all-reduce" in doc["derivation"]["still_assumed"]


def test_h100_tp4_profile_rests_on_the_tp4_rank_measured_on_an_h100() -> None:
    import derive_deployments as dd

    dep = dd.DEPLOYMENTS["tp4"]
    if not (fp.RESULTS / dep["file"]).is_file():
        pytest.skip("no committed H100 TP4-rank measurements in experiments/profiling/results")
    data = fp.load(dep["file"])
    assert data["env"]["gpu"] == "NVIDIA H100 80GB HBM3"
    for shape in data["models"][dep["rank"]]["shapes"][:5]:
        assert dd.rank_ops(shape, "tp4") == shape["ops"]  # measured: no stage rescaled (the superseded TP4_SCALE)
    doc = yaml.safe_load((fp.PROFILE_DIR / f"{dep['stem']}.derived.yaml").read_text())
    assert doc["gpu"] == "NVIDIA H100 80GB HBM3" and doc["derivation"]["measured_rank"] == "qwen3-235b-a22b-tp4-rank"
    assert doc["derivation"]["measured_on"] == "NVIDIA H100 80GB HBM3"
    assert "FP8" in doc["derivation"]["still_assumed"] and "TP8 rank" not in doc["derivation"]["still_assumed"]


def test_gpu_comparison_is_reproduced(tmp_path: Path) -> None:
    import compare_gpus as cg

    if not (fp.RESULTS / cg.H200_FILE).is_file():
        pytest.skip("no committed H200 measurements in experiments/profiling/results")
    assert cg.main(["--out-dir", str(tmp_path)]) == 0
    fresh = json.loads((tmp_path / cg.OUT_FILE).read_text())
    assert fresh == json.loads((fp.RESULTS / cg.OUT_FILE).read_text())
    for key in ("qwen3-4b", "qwen3-8b", cg.TP8):  # every shape of these models was measured on both GPUs
        assert fresh["step_ratio"][key]["all"]["n"] >= 50


def test_ep_busiest_rank_load_exceeds_the_mean_at_small_batches() -> None:
    import derive_deployments as dd

    # 1 token: 8 distinct experts over 8 ranks of 16; the busiest rank gets ~2.5 of them (mean 1)
    assert 2.3 < dd.ep_imbalance(1, "touched") < 2.8
    assert dd.ep_imbalance(64, "touched") < dd.ep_imbalance(64, "pairs")  # touched experts saturate at 16
    assert 1.0 <= dd.ep_imbalance(8192, "pairs") < 1.05
    tp4 = dd.rank_ops({"ops": {k: 1.0 for k in ("qkv_proj", "o_proj", "moe_experts", "attention", "lm_head", "sample",
                                                "qk_norm_rope", "moe_router")},
                       "prefill_tokens": 0, "decode_seqs": 4}, "tp4_rescaled")
    assert (tp4["o_proj"], tp4["moe_experts"], tp4["attention"], tp4["moe_router"]) == (2.0, 2.0, 1.0, 1.0)
