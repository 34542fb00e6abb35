"""Derive the deployable Qwen3-235B-A22B-FP8 serving profiles from measured single-GPU ranks.

SGLang cannot load the FP8 checkpoint at plain TP8 (each expert's intermediate 1536 / 8 = 192 is not a
multiple of the checkpoint's 128-wide quantisation blocks); it serves it at **TP4** (1536 / 4 = 384 = 3 x 128;
two TP4 replicas per 8-GPU node) or at **TP8 with expert parallelism** (whole experts per rank). No
multi-GPU machine was available, so each profile rests on one bf16 rank measured on one GPU, then applies the
same FP8 GEMM speed-up and all-reduce model as the TP8 derivation (``fit_profiles.derive_tp8_step``).
ASSUMPTIONS (each also in the profile's ``derivation`` block):

* **TP4 on the H200** (``tp4_h200``): the TP4 rank itself (16 query heads, 1 KV head, every expert's
  intermediate 1536 / 4 = 384, vocab / 4) was measured in bf16 on one H200 (run 4), so no stage is rescaled.
* **TP4 on the H100** (``tp4``, the default large pool): the TP4 rank measured in bf16 on one H100 (run 5,
  ``gpu_session_h100.sh``), like the H200's. Until run 5 the H200's rank was carried to the H100 by the TP8 rank's
  per-stage H100 / H200 ratios (median 1.063); the TP4 rank's own measured ratio is 1.071 (README "H100 session").
* For every TP4 profile, still derived: the FP8 factor and the all-reduces (one GPU measures neither; the
  H200 has the H100's tensor cores and NVLink4, so the same values are assumed for both). TP all-reduces:
  ring over 4 GPUs, ``2 (n - 1) / n = 1.5`` of the bytes on the bus.
* **TP4 rescaled** (``tp4_rescaled``; SUPERSEDED, kept only for the check in ``compare_gpus.py`` and the
  README's old numbers): the H100 TP4 profile before run 5, made from the measured TP8 rank by taking each
  stage proportional to the rank's work (``TP4_SCALE``; attention x 2 when the step prefills, x 1 in
  decode). It over-predicts the measured TP4 rank (median 1.27 on the H200: launch- and latency-bound
  stages grow less than their work).
* **TP8 + EP8** rank: attention, norms and LM head exactly as the measured TP8 rank; the rank holds 16
  whole experts (the same weight bytes as 128 experts x 192). All ranks must finish a layer before the
  all-reduce that ends it, so the step runs at the **busiest** rank's expert load, not the mean: the
  ``moe_experts`` stage is scaled by E[max over ranks] / E[mean] of the rank's load under uniform top-8
  routing (:func:`ep_imbalance`, Monte Carlo, seeded), the load being distinct experts touched in decode
  (memory-bound) and routed (token, expert) pairs when the step prefills (compute-bound). Trained routers
  are skewed beyond uniform, so this underestimates real imbalance. SGLang's plain ``--ep-size`` MoE keeps
  TP attention and ends the MoE with the same all-reduce, so communication is that of TP8.

Run (CPU, seconds; rewrites the two profile files)::

    .venv/bin/python experiments/profiling/derive_deployments.py
"""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path
from typing import Any

import fit_profiles as fp
import numpy as np

NUM_EXPERTS, TOP_K, HIDDEN, LAYERS = 128, 8, fp.HIDDEN_235B, fp.LAYERS_235B
# FP8 weights except the bf16 embedding and LM head (as the TP8 derivation)
WEIGHTS_GB = round((235.09e9 - 2 * 151936 * 4096) / 1e9 + 2 * 151936 * 4096 * 2 / 1e9, 1)
KV_BYTES_PER_TOKEN_PER_RANK = 94 * 1 * 128 * 2 * 2  # 94 layers x 1 KV head x 128 dims x (K, V) x bf16
TP4_SCALE = {"qkv_proj": (16 + 2) / (8 + 2), "o_proj": 2.0, "moe_experts": 2.0, "lm_head": 2.0, "sample": 2.0,
             "qk_norm_rope": (16 + 1) / (8 + 1)}
EP_RANKS, EP_TRIALS_TOKENS = 8, 100_000  # Monte Carlo budget: trials x tokens per estimate


@cache
def ep_imbalance(tokens: int, load: str, ranks: int = EP_RANKS, seed: int = 0) -> float:
    """E[max over ranks] / E[mean over ranks] of one EP rank's expert load for ``tokens`` tokens.

    Uniform top-``TOP_K`` routing over ``NUM_EXPERTS`` experts, ``NUM_EXPERTS / ranks`` consecutive experts
    per rank. ``load`` = ``"pairs"`` (routed token-expert pairs: compute) or ``"touched"`` (distinct experts
    with at least one token: weight bytes read).
    """
    if tokens <= 0:
        return 1.0
    rng = np.random.default_rng(seed)
    trials = max(8, EP_TRIALS_TOKENS // tokens)
    per = NUM_EXPERTS // ranks
    ratios = []
    for _ in range(trials):
        choice = np.argpartition(rng.random((tokens, NUM_EXPERTS)), TOP_K, axis=1)[:, :TOP_K]
        counts = np.bincount(choice.ravel(), minlength=NUM_EXPERTS).reshape(ranks, per)
        per_rank = counts.sum(axis=1) if load == "pairs" else (counts > 0).sum(axis=1)
        ratios.append((per_rank.max(), per_rank.mean()))
    mx, mean = np.mean(ratios, axis=0)
    return float(mx / mean)


def _all_reduce_s(tokens: int, tp: int) -> float:
    return fp.AR_LATENCY_S + 2 * (tp - 1) / tp * tokens * HIDDEN * 2 / fp.AR_BUSBW


# Tensor-parallel group size per kind (``tp4_rescaled``: the superseded rule, not a written profile)
TP_OF = {"tp4": 4, "tp4_h200": 4, "tp4_rescaled": 4, "ep8": 8}


def rank_ops(shape: dict[str, Any], kind: str) -> dict[str, float]:
    """A rank's stage times (ms) of the ``kind`` deployment: a measured TP4 rank's own (``tp4``, ``tp4_h200``),
    or the measured TP8 rank's rescaled to the ``ep8`` rank or, by the superseded rule, to a TP4 rank
    (``tp4_rescaled``)."""
    ops = dict(shape["ops"])
    if kind in ("tp4", "tp4_h200"):  # measured TP4 ranks
        return ops
    prefill = shape["prefill_tokens"] > 0
    if kind == "tp4_rescaled":
        for k, f in TP4_SCALE.items():
            ops[k] *= f
        ops["attention"] *= 2.0 if prefill else 1.0
    elif kind == "ep8":
        tokens = shape["prefill_tokens"] + shape["decode_seqs"]
        ops["moe_experts"] *= ep_imbalance(tokens, "pairs" if prefill else "touched")
    else:
        raise ValueError(f"kind must be one of {sorted(TP_OF)}, got {kind!r}")
    return ops


def derive_step(shape: dict[str, Any], kind: str, fp8_speedup: float = fp.FP8_SPEEDUP) -> float:
    """Derived FP8 step time (s) of one shape on the ``kind`` deployment (module doc)."""
    ops = rank_ops(shape, kind)
    head_keys = ("embed", "final_norm", "lm_head", "sample")
    layer = sum(v / fp8_speedup if k in fp.GEMM_STAGES else v for k, v in ops.items() if k not in head_keys)
    head = ops["embed"] + ops["final_norm"] + ops["lm_head"] / fp8_speedup + ops["sample"]
    rank_ms = shape["step_ms"] * (head + LAYERS * layer) / shape["composed_ms"]
    tp = TP_OF[kind]
    tokens = shape["prefill_tokens"] + shape["decode_seqs"]
    return float(rank_ms / 1e3 + (2 * LAYERS + 1) * _all_reduce_s(tokens, tp) + fp.AR_LATENCY_S)


_TP4 = "TP4 (two replicas per 8-GPU node; SGLang's recommended layout for the FP8 checkpoint)"
_MEASURED_TP4 = "the bf16 TP4 rank of Qwen3-235B-A22B measured on one {} (CUDA graphs; no stage rescaled)"
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "tp4": dict(stem="qwen3-235b-a22b-fp8__h100x4", gpus=4, tp=4, what=_TP4, gpu="h100", file=fp.RUN5[0],
                mixed=fp.RUN5[1], rank="qwen3-235b-a22b-tp4-rank", command=fp.RUN5[2],
                measured=_MEASURED_TP4.format("H100")),
    "ep8": dict(stem="qwen3-235b-a22b-fp8-ep__h100x8", gpus=8, tp=8, gpu="h100", file=fp.DERIVED_FILE,
                mixed=fp.MIXED_FILE, rank=fp.DERIVED_KEY, command=fp.RUN2_COMMAND,
                what="TP8 attention + EP8 experts (--tp 8 --ep-size 8), one instance per 8-GPU node",
                measured="the bf16 TP8 rank of Qwen3-235B-A22B measured on one H100 (CUDA graphs), stages rescaled to "
                         "this deployment's rank"),
    "tp4_h200": dict(stem="qwen3-235b-a22b-fp8__h200x4", gpus=4, tp=4, what=_TP4 + " on H200s", gpu="h200",
                     file=fp.RUNS["h200"][0], mixed=fp.RUNS["h200"][1], rank="qwen3-235b-a22b-tp4-rank",
                     command=fp.RUN4_COMMAND, measured=_MEASURED_TP4.format("H200")),
}


def write_profile(kind: str, profiles_dir: Path) -> dict[str, Any]:
    """Derive, fit and write one deployment's profile; return its evaluation summary."""
    dep = DEPLOYMENTS[kind]
    data = fp.load(dep["file"])
    env, entry = data["env"], dict(data["models"][dep["rank"]])
    mixed = fp.load(dep["mixed"])["models"].get(dep["rank"])
    shapes = [dict(s, ops=rank_ops(s, kind)) for s in entry["shapes"]]  # scaled ops: g from the rank's kernel
    y = np.array([derive_step(s, kind) for s in entry["shapes"]])
    ev = fp.evaluate(shapes, y)
    gpus = dep["gpus"]
    memory = dict(gpu_memory_gb=fp.GPU_MEMORY_GB[dep["gpu"]], weights_gb=WEIGHTS_GB,
                  kv_bytes_per_token=KV_BYTES_PER_TOKEN_PER_RANK * gpus, overhead_gb_per_gpu=1.0)
    source = (f"Derived for {dep['what']}: {dep['measured']}, "
              f"GEMMs x1/{fp.FP8_SPEEDUP} for FP8, {2 * LAYERS + 1} TP "
              f"all-reduces over {dep['tp']} GPUs (assumed {fp.AR_LATENCY_S * 1e6:.0f} us + "
              f"{fp.AR_BUSBW / 1e9:.0f} GB/s); experiments/profiling/derive_deployments.py")
    doc = fp.profile_doc(dep["stem"], "Qwen3-235B-A22B-FP8", "derived", ev, env, memory, gpus, "fp8", source,
                         command=dep["command"])
    doc["measured"]["command"] += "  &&  .venv/bin/python experiments/profiling/derive_deployments.py"
    ms = [dict(m, ops=rank_ops(m, kind)) for m in mixed["shapes"]] if mixed else []
    ym = np.array([derive_step(m, kind) for m in mixed["shapes"]]) if mixed else np.array([])
    if ms:
        ev["mixed"] = fp.mixed_validation(ms, ym, ev)
        doc["fit"].update(mixed_points=ev["mixed"]["points"], mixed_median_rel_error=ev["mixed"]["median_rel_error"])
    doc["derivation"] = dict(
        measured_rank=dep["rank"], deployment=kind, fp8_gemm_speedup=fp.FP8_SPEEDUP, gemm_stages=list(fp.GEMM_STAGES),
        allreduce_latency_s=fp.AR_LATENCY_S, allreduce_busbw_bytes_per_s=fp.AR_BUSBW, allreduces_per_step=2 * LAYERS + 1,
        stage_scale=({"moe_experts": "E[max]/E[mean] rank load, uniform top-8 routing over 8 ranks x 16 experts "
                                     "(touched experts in decode, routed pairs when prefilling)"} if kind == "ep8" else
                     "none: the TP4 rank itself was measured (bf16, one GPU)"),
        ep_imbalance=({str(t): {"touched": round(ep_imbalance(t, "touched"), 3), "pairs": round(ep_imbalance(t, "pairs"), 3)}
                       for t in (1, 8, 32, 128, 1024, 8192)} if kind == "ep8" else None),
        memory=("KV per token = 94 layers x 1 KV head x 128 x 2 (K,V) x 2 B (bf16 KV, SGLang's default for this "
                f"checkpoint) per rank x {gpus} ranks; overhead_gb_per_gpu = 1.0 assumed (CUDA context, NCCL and "
                "custom all-reduce buffers) outside mem_fraction_static's weights + KV"))
    if kind in ("tp4", "tp4_h200"):
        doc["derivation"].update(measured_on=env["gpu"], still_assumed=(
            f"the FP8 GEMM speed-up x{fp.FP8_SPEEDUP} (fit_profiles.FP8_SPEEDUP: half the bytes, twice the tensor-core "
            "peak, less block-scaling overhead; torch's stock FP8 path was slower than bf16, run 3, so SGLang's "
            f"kernels were not measurable) and the all-reduce latency {fp.AR_LATENCY_S * 1e6:.0f} us / bandwidth "
            f"{fp.AR_BUSBW / 1e9:.0f} GB/s (fit_profiles.AR_*: custom all-reduce on NVSwitch, ~80 % of NVLink4; a "
            "2xH100 node measured 329 GB/s); one GPU measures neither, and the H200 has the H100's tensor cores and "
            "NVLink4, so both GPUs use the same values; no end-to-end SGLang TP4 run yet"))
    fp.finish_profile(profiles_dir / f"{dep['stem']}.derived.yaml", doc,
                      "Written by .venv/bin/python experiments/profiling/derive_deployments.py from experiments/profiling/"
                      f"results/{dep['file']} and {dep['mixed']}"
                      + "; see experiments/profiling/README.md",
                      shapes, y, ms, ym, ev, entry["spec"])
    return dict(stem=dep["stem"], headline=fp.headline(entry["shapes"], y), simulator=ev["simulator"],
                heldout_median_rel_error=ev["heldout_median_rel_error"])


def main(argv: list[str] | None = None) -> int:
    """Write the deployable profiles and print their headline figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles-dir", type=Path, default=fp.PROFILE_DIR)
    args = ap.parse_args(argv)
    for kind in DEPLOYMENTS:
        s = write_profile(kind, args.profiles_dir)
        print(s["stem"], {k: round(v, 2) for k, v in s["headline"].items()}, s["simulator"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
