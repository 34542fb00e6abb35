"""H200 against H100 on identical shapes, and a check of the H100 TP4 derivation against the measured TP4 rank.

Reads the committed measurements (``results/run1``, ``run2``, ``run3_mixed`` on the H100; ``run4_h200``,
``run4_mixed_h200`` on the H200; every shape of a model is the same on both GPUs, ``profile_models.py``
sizes them for 80 GB on either) and writes ``results/h200_vs_h100.json``:

* ``step_ratio``: H200 / H100 CUDA-graph step time per model measured on both (Qwen3-4B, Qwen3-8B, the
  235B TP8 rank), over the shapes both measured: median, range, per mode, and the median per stage;
* ``profile_ratio``: H200 / H100 of the step times each profile is fitted to (measured for 4B / 8B; for the
  TP4 large pool the derived FP8 TP4 steps, each from the TP4 rank measured on that GPU: run 4 on the H200,
  run 5 on the H100);
* ``tp4_rescale_check``: ``derive_deployments.TP4_SCALE`` (the rule the H100 TP4 profile used until
  2026-12-05, now superseded) applied to the H200 TP8 rank against the TP4 rank measured on the same H200
  (bf16 rank steps, and the full derived FP8 + all-reduce steps).

Run (CPU, seconds)::

    .venv/bin/python experiments/profiling/compare_gpus.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import derive_deployments as dd
import fit_profiles as fp
import numpy as np

TP8, TP4 = "qwen3-235b-a22b-tp8-rank", "qwen3-235b-a22b-tp4-rank"
# model key -> (H100 file, H200 file), fit/held-out shapes; mixed shapes from the two mixed files
H100_FILES = {"qwen3-4b": "run1_measurements.json", "qwen3-8b": "run1_measurements.json", TP8: fp.DERIVED_FILE}
H200_FILE, H200_MIXED = fp.RUNS["h200"][0], fp.RUNS["h200"][1]
OUT_FILE = "h200_vs_h100.json"
Key = tuple[str, int, int, int, int]


def by_shape(shapes: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Shapes keyed by (mode, n_seqs, seq_len, ctx, decode seqs)."""
    return {(s["mode"], s["n_seqs"], s["seq_len"], s["ctx"], s.get("dec_b", 0)): s for s in shapes}


def stats(r: list[float]) -> dict[str, float]:
    """Median, min, max and count of a list of ratios (rounded)."""
    a = np.array(r)
    return dict(median=round(float(np.median(a)), 4), min=round(float(a.min()), 4), max=round(float(a.max()), 4),
                n=len(r))


def step_ratio(h100: list[dict[str, Any]], h200: list[dict[str, Any]]) -> dict[str, Any]:
    """H200 / H100 step (and per-stage) time over the shapes both GPUs measured."""
    a, b = by_shape(h100), by_shape(h200)
    common = sorted(set(a) & set(b))
    r = {k: b[k]["step_ms"] / a[k]["step_ms"] for k in common}
    out: dict[str, Any] = dict(all=stats(list(r.values())))
    for mode in ("prefill", "decode", "mixed"):
        if rm := [v for k, v in r.items() if k[0] == mode]:
            out[mode] = stats(rm)
    stages = sorted({op for k in common for op in a[k]["ops"]})
    out["per_stage_median"] = {op: round(float(np.median([b[k]["ops"][op] / a[k]["ops"][op] for k in common
                                                          if op in a[k]["ops"] and op in b[k]["ops"]])), 4)
                               for op in stages}
    return out


def derived(shapes: list[dict[str, Any]], kind: str) -> dict[Key, float]:
    """Derived FP8 step times (s) of the ``kind`` deployment, keyed by shape."""
    return {k: dd.derive_step(s, kind) for k, s in by_shape(shapes).items()}


def rescaled_rank_ms(shape: dict[str, Any]) -> float:
    """The bf16 TP4 rank step (ms) that TP4_SCALE makes of a TP8-rank shape (no FP8, no all-reduce)."""
    return float(shape["step_ms"] * composed(dd.rank_ops(shape, "tp4_rescaled")) / shape["composed_ms"])


def composed(ops: dict[str, float]) -> float:
    """Per-operator composition of a 235B rank step (ms): head stages once, layer stages x 94."""
    head = ("embed", "final_norm", "lm_head", "sample")
    return sum(ops[k] for k in head) + dd.LAYERS * sum(v for k, v in ops.items() if k not in head)


def main(argv: list[str] | None = None) -> int:
    """Write results/h200_vs_h100.json and print its headline ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=fp.RESULTS)
    args = ap.parse_args(argv)
    h200, h200m, h100m = fp.load(H200_FILE)["models"], fp.load(H200_MIXED)["models"], fp.load(fp.MIXED_FILE)["models"]
    out: dict[str, Any] = dict(h100_gpu=fp.load("run1_measurements.json")["env"]["gpu"],
                               h200_gpu=fp.load(H200_FILE)["env"]["gpu"], step_ratio={}, profile_ratio={})
    for key, file in H100_FILES.items():
        out["step_ratio"][key] = step_ratio(fp.load(file)["models"][key]["shapes"] + (h100m.get(key) or {}).get("shapes", []),
                                            h200[key]["shapes"] + (h200m.get(key) or {}).get("shapes", []))
    for key in ("qwen3-4b", "qwen3-8b"):
        out["profile_ratio"][key] = dict(step=out["step_ratio"][key]["all"])
    tp4_h100 = derived(fp.load(fp.RUN5[0])["models"][TP4]["shapes"], "tp4")
    tp4_h200 = derived(h200[TP4]["shapes"], "tp4_h200")
    common = sorted(set(tp4_h100) & set(tp4_h200))
    out["profile_ratio"]["qwen3-235b-a22b-fp8 TP4"] = dict(
        step=stats([tp4_h200[k] / tp4_h100[k] for k in common]),
        note="each from the TP4 rank measured on that GPU (H200 run 4, H100 run 5) + FP8 x1/1.6 + all-reduces")
    # TP4_SCALE on the H200's own TP8 rank vs the TP4 rank measured beside it (same GPU, same shapes)
    tp8, tp4 = by_shape(h200[TP8]["shapes"] + h200m[TP8]["shapes"]), by_shape(h200[TP4]["shapes"] + h200m[TP4]["shapes"])
    common = sorted(set(tp8) & set(tp4))
    rank = {k: rescaled_rank_ms(tp8[k]) / tp4[k]["step_ms"] for k in common}
    step = {k: dd.derive_step(tp8[k], "tp4_rescaled") / dd.derive_step(tp4[k], "tp4_h200") for k in common}
    out["tp4_rescale_check"] = dict(
        what="derived / measured on the same H200: TP4_SCALE applied to the TP8 rank vs the measured TP4 rank",
        bf16_rank_step=dict(all=stats(list(rank.values())),
                            **{m: stats([v for k, v in rank.items() if k[0] == m]) for m in ("prefill", "decode", "mixed")}),
        fp8_step_with_allreduce=dict(all=stats(list(step.values())),
                                     **{m: stats([v for k, v in step.items() if k[0] == m]) for m in ("prefill", "decode", "mixed")}),
        per_stage_median={op: round(float(np.median([dd.rank_ops(tp8[k], "tp4_rescaled")[op] / tp4[k]["ops"][op] for k in common])), 4)
                          for op in sorted(tp4[common[0]]["ops"])})
    (args.out_dir / OUT_FILE).write_text(json.dumps(out, indent=1))
    for key, r in out["step_ratio"].items():
        print(f"{key:28s} H200/H100 step: {r['all']}  prefill {r.get('prefill', {}).get('median')} "
              f"decode {r.get('decode', {}).get('median')} mixed {r.get('mixed', {}).get('median')}")
    print("TP4 profile steps H200/H100:", out["profile_ratio"]["qwen3-235b-a22b-fp8 TP4"]["step"])
    print("TP4_SCALE check (derived/measured):", json.dumps(out["tp4_rescale_check"]["bf16_rank_step"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
