"""Fit the simulator's step-time model to the H100 and H200 measurements and write the serving-profile files.

Step model (``rlroute.cluster.profiles``): ``step = a + b*prefill_tokens + c*decode_seqs + d*context_tokens``.
For each measured model the coefficients are a non-negative least-squares fit of the CUDA-graph step
times (``step_ms``) on the ``fit`` shapes, weighted by 1/measured so that the relative error is minimised;
``heldout`` shapes (different prompt lengths, batch sizes and contexts) are only predicted.

The Qwen3-235B-A22B FP8 TP8 profile is *derived* (see ``derive_tp8_step``): one tensor-parallel rank of
the real architecture was measured in bf16 on one H100; its GEMM stages are sped up by an assumed FP8
factor and the tensor-parallel all-reduces, which one GPU cannot measure, are added from an assumed
latency/bandwidth model. The derived step times are then fitted like the measured ones.

Each profile also gets ONE optional extended block that the simulator uses instead of the 4-term model
(format: ``rlroute/cluster/profiles/__init__.py``): ``step_time_moe`` for MoE models (``+ e*experts
touched(P + D) + f*Q``) and ``step_time_attn`` for dense ones (``+ f*Q``), Q = attended (query, key)
pairs of the prefill chunk (causal attention is quadratic in the chunk length). Both are fitted the same
way on the same ``fit`` shapes. After writing a file the script loads it with the simulator's loader and
reports ``fit.simulator_*``: the error of ``ServingProfile.step_time`` itself (rounded coefficients,
the model the simulator runs) on the fit, held-out and mixed shapes. ``fit_summary.json`` lists every
variant (4-term, +MoE, +attention, both) for comparison.

Run (CPU, seconds)::

    .venv/bin/python experiments/profiling/fit_profiles.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from step_models import (  # noqa: F401  (re-exported for tests)
    design,
    experts_touched,
    extension_block,
    fit_step_model,
    prefill_pairs,
    simulator_errors,
    variant_errors,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PROFILE_DIR = HERE.parents[1] / "rlroute" / "cluster" / "profiles"
SCRIPT = "experiments/profiling/profile_models.py"
_PROFILE = "PYTHONUNBUFFERED=1 python3 -W ignore experiments/profiling/profile_models.py"
_FLAGS = "--compile --prefill-sdpa cudnn --decode-sdpa cudnn"
RUN_COMMAND = f"{_PROFILE} {_FLAGS} --budget-s 165 --out $OUT"  # run 1
RUN2_COMMAND = f"{_PROFILE} --models qwen3-235b-a22b-tp8-rank,qwen3-4b {_FLAGS} --budget-s 170 --out $OUT"
_H200_MODELS = "--models qwen3-4b,qwen3-8b,qwen3-235b-a22b-tp4-rank,qwen3-235b-a22b-tp8-rank"
RUN4_COMMAND = f"{_PROFILE} {_H200_MODELS} {_FLAGS} --budget-s 150 --out $OUT/run4"  # H200 (gpu_session.sh)
RUN5_COMMAND = (f"{_PROFILE} --models qwen3-235b-a22b-tp4-rank,qwen3-235b-a22b-tp8-rank {_FLAGS} --budget-s 150 "
                "--out $OUT/run5")  # H100, the 235B ranks again (gpu_session_h100.sh)
RUN5 = ("run5_h100_measurements.json", "run5_mixed_h100_measurements.json", RUN5_COMMAND)
FIT_COMMAND = ".venv/bin/python experiments/profiling/fit_profiles.py"
# Total memory nvidia-smi reports, the figure SGLang sizes mem_fraction_static against: an H100 80GB HBM3
# 81,559 MiB (85.52 GB), an H200 143,771 MiB (150.75 GB; both read on the device machines, KINDS.md / run 4).
GPU_MEMORY_GB = {"h100": round(81559 * 2**20 / 1e9, 2), "h200": round(143771 * 2**20 / 1e9, 2)}
# SGLang defaults for one server on a GPU of 60-160 GiB (H100 and H200 alike: sglang_defaults.py)
LIMITS = {"max_running_requests": 256, "chunked_prefill_tokens": 8192}
# Per GPU: (results file, mixed-steps file (validation of additivity only), the command that measured them)
RUNS = {"h100": ("run1_measurements.json", "run3_mixed_measurements.json", RUN_COMMAND),
        "h200": ("run4_h200_measurements.json", "run4_mixed_h200_measurements.json", RUN4_COMMAND)}
# (model key in the measurements, GPU, HF architecture name); the profile stem is f"{key}__{gpu}"
MEASURED = [("qwen3-4b", "h100", "Qwen3-4B"), ("qwen3-8b", "h100", "Qwen3-8B"),
            ("qwen3-30b-a3b", "h100", "Qwen3-30B-A3B"), ("qwen3-4b", "h200", "Qwen3-4B"), ("qwen3-8b", "h200", "Qwen3-8B")]
DERIVED_STEM, DERIVED_KEY, DERIVED_FILE = "qwen3-235b-a22b-fp8__h100x8", "qwen3-235b-a22b-tp8-rank", "run2_measurements.json"
MIXED_FILE = RUNS["h100"][1]
FP8_FILE = "run3_fp8_gemm.json"

# --- assumptions of the TP8 derivation (not measurable on the single GPU that was available) ---
TP = 8
# FP8 (e4m3, per-block scales as in Qwen3-235B-A22B-FP8) GEMMs vs bf16: half the weight bytes (memory-
# bound decode) and twice the dense tensor-core peak (989 -> 1979 TFLOP/s, H100 SXM datasheet), less
# the scaling/quantisation overhead of block-wise FP8; 1.6x assumed for every GEMM stage. This is an
# assumption about SGLang's FP8 kernels (DeepGEMM / fused-quant Triton): torch 2.11's stock FP8 path
# (dynamic quantisation + _scaled_mm / _scaled_grouped_mm, fp8_gemm_bench.py) was *slower* than bf16 at
# most shapes on the H100 (results/run3_fp8_gemm.json), so it could not serve as the measurement; the
# README gives the derived numbers for a 1.0x factor as well.
FP8_SPEEDUP = 1.6
GEMM_STAGES = ("qkv_proj", "o_proj", "moe_experts", "lm_head")
# Tensor-parallel all-reduce of the hidden state (bf16), two per layer (after attention and after the MoE)
# plus one for the vocab-parallel embedding: latency 10 us (order of small-message custom all-reduce on
# 8xH100 NVSwitch) and 360 GB/s bus bandwidth (~80 % of NVLink4's 450 GB/s per direction; a 2xH100 node
# here measured 329 GB/s for a 1 GiB all-reduce, KINDS.md). Both assumed, not measured.
AR_LATENCY_S = 10e-6
AR_BUSBW = 360e9
HIDDEN_235B, LAYERS_235B = 4096, 94


def load(file: str) -> dict[str, Any]:
    """Read one measurements JSON written by profile_models.py."""
    path = RESULTS / file
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: cannot read measurements ({exc}); run profile_models.py first") from exc


def all_reduce_s(tokens: int) -> float:
    """One ring all-reduce of ``tokens`` bf16 hidden states across the TP group."""
    nbytes = tokens * HIDDEN_235B * 2
    return AR_LATENCY_S + 2 * (TP - 1) / TP * nbytes / AR_BUSBW


def derive_tp8_step(shape: dict[str, Any], fp8_speedup: float = FP8_SPEEDUP) -> float:
    """Derived 8xH100 FP8 step time (s) of one shape from the measured bf16 TP8-rank shape.

    The measured CUDA-graph step is scaled by the ratio of the per-operator composition with GEMM stages
    at FP8 speed to the plain composition, then the TP all-reduces are added.
    """
    ops, n_layers = shape["ops"], LAYERS_235B
    layer_ops = {k: v for k, v in ops.items() if k not in ("embed", "final_norm", "lm_head", "sample")}
    head = ops["embed"] + ops["final_norm"] + ops["lm_head"] / fp8_speedup + ops["sample"]
    layer_fp8 = sum(v / fp8_speedup if k in GEMM_STAGES else v for k, v in layer_ops.items())
    composed_fp8 = head + n_layers * layer_fp8
    rank_ms = shape["step_ms"] * composed_fp8 / shape["composed_ms"]
    tokens = shape["prefill_tokens"] + shape["decode_seqs"]
    comm_s = (2 * n_layers + 1) * all_reduce_s(tokens) + AR_LATENCY_S  # + logits all-gather (small)
    return float(rank_ms / 1e3 + comm_s)


def finish_profile(path: Path, doc: dict[str, Any], header: str, shapes: list[dict[str, Any]], y: np.ndarray,
                   mixed: list[dict[str, Any]], ym: np.ndarray, ev: dict[str, Any], spec: dict[str, Any]) -> None:
    """Add the extended block, write the file, then record the simulator model's errors in ``fit`` and ``ev``."""
    n_experts, top_k = int(spec.get("num_experts") or 0), int(spec.get("num_experts_per_tok") or 0)
    name, blk = extension_block(shapes, y, mixed, ym, n_experts, top_k, ev["points"], doc["measured"]["date"],
                                int(spec["num_hidden_layers"]))
    doc[name] = blk
    ev["variants"] = {"4-term": {k: ev[k] for k in ("median_rel_error", "heldout_median_rel_error", "max_rel_error")}
                      | ({"mixed_median_rel_error": ev["mixed"]["median_rel_error"]} if "mixed" in ev else {})}
    for label, terms in ((("+moe", "e"), ("+attn", "f"), ("+moe+attn", "ef")) if n_experts else (("+attn", "f"),)):
        ev["variants"][label] = {k: v for k, v in variant_errors(shapes, y, mixed, ym, terms, n_experts, top_k).items()
                                 if k != "coeffs"}
    write_yaml(path, doc, header)
    sim = simulator_errors(path, shapes, y, mixed, ym)
    ev["sim_pred"], ev["sim_mixed_pred"] = sim.pop("pred"), sim.pop("mixed_pred", [])
    doc["fit"].update(sim)
    ev["simulator"] = sim
    write_yaml(path, doc, header)


def evaluate(shapes: list[dict[str, Any]], y: np.ndarray) -> dict[str, Any]:
    """Fit on the ``fit`` split, report relative errors on both splits and per-point predictions."""
    x = design(shapes)
    is_fit = np.array([s["split"] == "fit" for s in shapes])
    beta = fit_step_model(x[is_fit], y[is_fit])
    pred = x @ beta
    rel = np.abs(pred - y) / y
    is_dec = np.array([s["mode"] == "decode" for s in shapes])
    return dict(
        coeffs=dict(zip("abcd", (float(v) for v in beta), strict=True)),
        points=int(is_fit.sum()), heldout_points=int((~is_fit).sum()),
        median_rel_error=float(np.median(rel[is_fit])), heldout_median_rel_error=float(np.median(rel[~is_fit])),
        max_rel_error=float(rel.max()),
        median_rel_error_decode=float(np.median(rel[is_dec])), median_rel_error_prefill=float(np.median(rel[~is_dec])),
        pred=pred.tolist(), measured=y.tolist(), split=[s["split"] for s in shapes], mode=[s["mode"] for s in shapes],
    )


def mixed_validation(shapes: list[dict[str, Any]], y: np.ndarray, ev: dict[str, Any]) -> dict[str, Any]:
    """Relative error of the fitted model on mixed prefill+decode steps (never used in the fit)."""
    c = ev["coeffs"]
    pred = design(shapes) @ np.array([c["a"], c["b"], c["c"], c["d"]])
    rel = np.abs(pred - y) / y
    return dict(points=len(shapes), median_rel_error=round(float(np.median(rel)), 4),
                max_rel_error=round(float(rel.max()), 4), pred=pred.tolist(), measured=y.tolist())


def fp8_table() -> dict[str, dict[str, float]]:
    """bf16 time / FP8 time per GEMM stage and token count from fp8_gemm_bench.py (> 1: FP8 faster)."""
    try:
        cases = load(FP8_FILE)["cases"]
    except SystemExit:
        return {}
    return {t: {k: round(v["bf16_ms"] / v["fp8_ms"], 3) for k, v in row.items() if "fp8_ms" in v}
            for t, row in cases.items()}


def headline(shapes: list[dict[str, Any]], step_s: np.ndarray) -> dict[str, float]:
    """Numbers comparable with public SGLang figures: batch-1 ms/token, 1k-prompt step, 8k prefill tok/s."""
    def find(mode: str, n: int, s: int, c: int) -> float:
        for sh, t in zip(shapes, step_s, strict=True):
            if (sh["mode"], sh["n_seqs"], sh["seq_len"], sh["ctx"]) == (mode, n, s, c):
                return float(t)
        return float("nan")

    return dict(decode_b1_ctx1k_ms=find("decode", 1, 1, 1024) * 1e3, prefill_1k_ms=find("prefill", 1, 1024, 0) * 1e3,
                prefill_8k_tok_s=8192 / find("prefill", 1, 8192, 0),
                decode_b64_ctx1k_ms=find("decode", 64, 1, 1024) * 1e3)


def composed_error(shapes: list[dict[str, Any]]) -> float:
    """Median relative gap between the per-operator composition and the CUDA-graph step."""
    return float(np.median([abs(s["composed_ms"] - s["step_ms"]) / s["step_ms"] for s in shapes]))


def coefficient_sources(kind: str, n: int, date: str, gpu: str) -> dict[str, str]:
    """One-line provenance of each coefficient."""
    base = (f"relative-error-weighted NNLS fit to {n} CUDA-graph step times on {gpu} "
            f"({date}, {SCRIPT}, fit_profiles.py)")
    if kind == "derived":
        base = (f"NNLS fit to {n} derived step times: measured bf16 TP8-rank step x FP8 GEMM speed-up "
                f"{FP8_SPEEDUP} + {2 * LAYERS_235B + 1} TP all-reduces ({AR_LATENCY_S * 1e6:.0f} us + bytes / "
                f"{AR_BUSBW / 1e9:.0f} GB/s), {date}")
    return dict(
        a=f"{base}; fixed per-step cost: weights streamed once, per-layer kernel latency, LM head + sampling",
        b=f"{base}; per new prompt token (GEMMs + causal attention averaged over 128-8192-token chunks)",
        c=f"{base}; per decoding sequence (activation traffic, MoE experts touched, sampling)",
        d=f"{base}; per context token attended in decode (KV read by cuDNN SDPA)",
    )


def profile_doc(stem: str, model: str, status: str, ev: dict[str, Any], env: dict[str, Any], memory: dict[str, Any],
                num_gpus: int, dtype: str, source: str, command: str = RUN_COMMAND) -> dict[str, Any]:
    """The serving-profile mapping in the agreed format (coord/PROFILE_FORMAT.md)."""
    srcs = coefficient_sources(status, ev["points"], env["date"], env["gpu"])
    doc: dict[str, Any] = dict(
        name=stem, model=model, gpu=env["gpu"], num_gpus=num_gpus, dtype=dtype, status=status, source=source,
        step_time={k: {"value": float(f"{v:.4g}"), "source": srcs[k]} for k, v in ev["coeffs"].items()},
        memory=memory, limits=dict(LIMITS),
        fit=dict(points=ev["points"], median_rel_error=round(ev["median_rel_error"], 4),
                 heldout_points=ev["heldout_points"], heldout_median_rel_error=round(ev["heldout_median_rel_error"], 4),
                 max_rel_error=round(ev["max_rel_error"], 4)),
        measured=dict(date=env["date"], driver=env.get("driver"), torch=env["torch"],
                      transformers=env.get("transformers"), script=SCRIPT,
                      command=f"{command}  &&  {FIT_COMMAND}"),
    )
    return doc


def write_yaml(path: Path, doc: dict[str, Any], header: str) -> None:
    """Write one profile file with a comment header."""
    text = yaml.safe_dump(doc, sort_keys=False, width=160, allow_unicode=False)
    path.write_text("".join(f"# {line}\n" for line in header.splitlines()) + text)


def plot(evals: dict[str, dict[str, Any]], out: Path) -> None:
    """Predicted-vs-measured scatter of the simulator's step model (the extended block), one panel per
    profile, fit vs held-out and prefill vs decode; the title also gives the 4-term model's errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ncols = min(4, len(evals))
    nrows = -(-len(evals) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(evals):]:
        ax.set_visible(False)
    for ax, (stem, ev) in zip(axes.flat, evals.items(), strict=False):
        y, p = np.array(ev["measured"]) * 1e3, np.array(ev["sim_pred"]) * 1e3
        for split, mode, marker, color in (("fit", "prefill", "o", "tab:blue"), ("fit", "decode", "s", "tab:blue"),
                                           ("heldout", "prefill", "o", "tab:red"), ("heldout", "decode", "s", "tab:red")):
            m = np.array([(s == split and md == mode) for s, md in zip(ev["split"], ev["mode"], strict=True)])
            if m.any():
                ax.scatter(y[m], p[m], marker=marker, s=18, facecolors=color if split == "fit" else "none",
                           edgecolors=color, label=f"{split} {mode}")
        if "mixed" in ev:
            my, mp = np.array(ev["mixed"]["measured"]) * 1e3, np.array(ev["sim_mixed_pred"]) * 1e3
            ax.scatter(my, mp, marker="^", s=26, facecolors="none", edgecolors="tab:green", label="mixed (validation)")
            y, p = np.r_[y, my], np.r_[p, mp]
        lo, hi = min(y.min(), p.min()) * 0.8, max(y.max(), p.max()) * 1.25
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.15, label="±10 %")
        sim = ev["simulator"]
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured step (ms)",
               ylabel=f"simulator ({sim['simulator_model']}) (ms)",
               title=f"{stem}\nsimulator model: fit {sim['simulator_median_rel_error']:.1%}, held-out "
                     f"{sim['simulator_heldout_median_rel_error']:.1%}"
                     + (f", mixed {sim['simulator_mixed_median_rel_error']:.1%}" if "mixed" in ev else "")
                     + f"\n4-term: fit {ev['median_rel_error']:.1%}, held-out {ev['heldout_median_rel_error']:.1%}"
                     + (f", mixed {ev['mixed']['median_rel_error']:.1%}" if "mixed" in ev else ""))
        ax.title.set_fontsize(8)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


_PER_POINT = ("pred", "measured", "split", "mode", "mixed", "sim_pred", "sim_mixed_pred")


def main(argv: list[str] | None = None) -> int:
    """Fit every profile, write the YAML files, the plot and results/fit_summary.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles-dir", type=Path, default=PROFILE_DIR, help="where the profile YAML files go")
    ap.add_argument("--out-dir", type=Path, default=RESULTS, help="where the plot and fit_summary.json go")
    args = ap.parse_args(argv)
    summary: dict[str, Any] = {}
    evals: dict[str, dict[str, Any]] = {}
    for key, gpu, arch in MEASURED:
        stem, (file, mixed_file, command) = f"{key}__{gpu}", RUNS[gpu]
        data = load(file)
        env, entry = data["env"], data["models"][key]
        shapes = entry["shapes"]
        y = np.array([s["step_ms"] for s in shapes]) / 1e3
        ev = evaluate(shapes, y)
        memory = dict(gpu_memory_gb=GPU_MEMORY_GB[gpu], weights_gb=round(entry["params"] * 2 / 1e9, 2),
                      kv_bytes_per_token=int(entry["kv_bytes_per_token"]))
        source = (f"Measured on one {env['gpu']} (driver {env.get('driver')}, torch {env['torch']}): {arch} architecture "
                  f"(transformers config, random bf16 weights), per-operator + CUDA-graph step profiling, NNLS fit")
        doc = profile_doc(stem, arch, "measured", ev, env, memory, 1, "bf16", source, command)
        doc["fit"]["composed_vs_graph_median_rel_error"] = round(composed_error(shapes), 4)
        spec = entry["spec"]
        mixed = load(mixed_file)["models"].get(key)
        ms = mixed["shapes"] if mixed else []
        ym = np.array([m["step_ms"] for m in ms]) / 1e3
        if ms:
            ev["mixed"] = mixed_validation(ms, ym, ev)
            doc["fit"]["mixed_points"] = ev["mixed"]["points"]
            doc["fit"]["mixed_median_rel_error"] = ev["mixed"]["median_rel_error"]
        finish_profile(args.profiles_dir / f"{stem}.measured.yaml", doc,
                       f"Written by {FIT_COMMAND} from experiments/profiling/results/{file}"
                       + (f" and {mixed_file}" if ms else "") + "; see experiments/profiling/README.md",
                       shapes, y, ms, ym, ev, spec)
        evals[stem] = ev
        summary[stem] = dict({k: v for k, v in ev.items() if k not in _PER_POINT},
                             mixed={k: v for k, v in ev.get("mixed", {}).items() if k not in ("pred", "measured")},
                             headline=headline(shapes, y), composed_vs_graph=composed_error(shapes),
                             hf_eager_prefill_ms=entry.get("hf_eager_prefill_ms"), hf_check_rel_err=entry["hf_check_rel_err"])

    data = load(DERIVED_FILE)
    env, entry = data["env"], data["models"][DERIVED_KEY]
    shapes = entry["shapes"]
    y = np.array([derive_tp8_step(s) for s in shapes])
    ev = evaluate(shapes, y)
    rank_y = np.array([s["step_ms"] for s in shapes]) / 1e3
    memory = dict(gpu_memory_gb=GPU_MEMORY_GB["h100"],
                  # FP8 weights (1 B/param) except the bf16 embedding and LM head: 233.85e9 + 2 x 1.245e9 x 2 B
                  weights_gb=round((235.09e9 - 2 * 151936 * 4096) * 1 / 1e9 + 2 * 151936 * 4096 * 2 / 1e9, 1),
                  # per rank 1 KV head (4 heads < TP 8, replicated): 94 x 1 x 128 x 2 x 2 B, times 8 ranks
                  kv_bytes_per_token=94 * 1 * 128 * 2 * 2 * TP)
    source = ("Derived: one TP8 rank of Qwen3-235B-A22B measured in bf16 on one H100 (CUDA graphs), GEMM stages "
              f"x1/{FP8_SPEEDUP} for FP8, plus {2 * LAYERS_235B + 1} TP all-reduces per step (assumed "
              f"{AR_LATENCY_S * 1e6:.0f} us + {AR_BUSBW / 1e9:.0f} GB/s); see experiments/profiling/README.md")
    doc = profile_doc(DERIVED_STEM, "Qwen3-235B-A22B-FP8", "derived", ev, env, memory, TP, "fp8", source,
                      command=RUN2_COMMAND)
    mixed = load(MIXED_FILE)["models"].get(DERIVED_KEY)
    ms = mixed["shapes"] if mixed else []
    ym = np.array([derive_tp8_step(m) for m in ms])
    if ms:
        ev["mixed"] = mixed_validation(ms, ym, ev)
        doc["fit"]["mixed_points"] = ev["mixed"]["points"]
        doc["fit"]["mixed_median_rel_error"] = ev["mixed"]["median_rel_error"]
    doc["derivation"] = dict(measured_rank=DERIVED_KEY, fp8_gemm_speedup=FP8_SPEEDUP, gemm_stages=list(GEMM_STAGES),
                             allreduce_latency_s=AR_LATENCY_S, allreduce_busbw_bytes_per_s=AR_BUSBW,
                             allreduces_per_step=2 * LAYERS_235B + 1)
    spec = entry["spec"]
    finish_profile(args.profiles_dir / f"{DERIVED_STEM}.derived.yaml", doc,
                   f"Written by {FIT_COMMAND} from experiments/profiling/results/{DERIVED_FILE}"
                   + (f" and {MIXED_FILE}" if ms else "") + "; see experiments/profiling/README.md",
                   shapes, y, ms, ym, ev, spec)
    evals[DERIVED_STEM] = ev
    summary[DERIVED_STEM] = dict({k: v for k, v in ev.items() if k not in _PER_POINT},
                                 mixed={k: v for k, v in ev.get("mixed", {}).items() if k not in ("pred", "measured")},
                                 headline=headline(shapes, y), headline_rank_bf16_no_comm=headline(shapes, rank_y),
                                 headline_fp8_speedup_1=headline(shapes, np.array([derive_tp8_step(s, 1.0) for s in shapes])),
                                 composed_vs_graph=composed_error(shapes))
    summary["fp8_gemm_bf16_over_fp8"] = fp8_table()

    rep = load(DERIVED_FILE)["models"].get("qwen3-4b")
    if rep:  # the same Qwen3-4B shapes measured again in the second run on another H100 lease
        first = {(s["mode"], s["n_seqs"], s["seq_len"], s["ctx"]): s["step_ms"]
                 for s in load("run1_measurements.json")["models"]["qwen3-4b"]["shapes"]}
        diffs = [abs(s["step_ms"] / first[k] - 1) for s in rep["shapes"]
                 if (k := (s["mode"], s["n_seqs"], s["seq_len"], s["ctx"])) in first]
        summary["repeatability_qwen3-4b"] = dict(shapes=len(diffs), median_rel_diff=float(np.median(diffs)),
                                                 max_rel_diff=float(np.max(diffs)))
    plot(evals, args.out_dir / "predicted_vs_measured.png")
    (args.out_dir / "fit_summary.json").write_text(json.dumps(summary, indent=1))
    for stem, s in summary.items():
        if "coeffs" in s:
            c = s["coeffs"]
            print(f"{stem:30s} a={c['a']:.3e} b={c['b']:.3e} c={c['c']:.3e} d={c['d']:.3e}  fit med "
                  f"{s['median_rel_error']:.1%} held-out med {s['heldout_median_rel_error']:.1%} max {s['max_rel_error']:.1%}"
                  f"  mixed med {s['mixed'].get('median_rel_error')}  | simulator model: "
                  + " ".join(f"{k.removeprefix('simulator_')}={v}" for k, v in s["simulator"].items()) + "\n   "
                  f"  headline {json.dumps({k: round(v, 2) for k, v in s['headline'].items()})}")
        else:
            print(stem, s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
