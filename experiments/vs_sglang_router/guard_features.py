"""Which features trip an exported policy's OOD guard on validation observations (what to fix, not the threshold).

Records observations of the ``val`` split (``--split``) with the exported policy deciding greedily, in the env of the run's
``config.yaml`` (as ``rlroute export`` calibrates the guard: seeds 101 and 20101 are its fit and held-out
halves), scores them with the manifest's guard and counts, over the flagged observations, the features out
of the training range and the three largest z-scores of each.

Usage (about a minute on 2 cores)::

    RLROUTE_SHARED_DATA=/work/shared/data .venv/bin/python experiments/vs_sglang_router/guard_features.py \\
        experiments/vs_sglang_router/policy_mmlu_mooncake_v4 runs/ppo_mm_v4/config.yaml --seeds 101 20101
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", type=Path)
    ap.add_argument("config", type=Path, help="the training run's config.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 20101])
    ap.add_argument("--n", type=int, default=2000, help="observations per seed")
    ap.add_argument("--split", default="val", help="workload split (the guard is calibrated on val)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides (dotted key=value, e.g. env.warmup=0)")
    a = ap.parse_args()
    from omegaconf import OmegaConf

    from rlroute.env import build_env
    from rlroute.export.ood import OodGuard
    from rlroute.export.verify import record_observations
    from rlroute.features import SCHEMA
    from rlroute.policies.onnx import OnnxPolicy

    guard = OodGuard.from_json(json.loads((a.policy / "manifest.json").read_text())["ood"])
    pol = OnnxPolicy(a.policy)
    cfg = OmegaConf.merge(OmegaConf.load(a.config), OmegaConf.from_dotlist(a.set))

    def act(obs: np.ndarray, mask: np.ndarray) -> int:
        return int(np.argmax(np.where(mask, pol.logits(obs), -np.inf)))

    per_seed = []
    for s in a.seeds:
        env = build_env(cfg, split=a.split)
        per_seed.append(record_observations(env, a.n, s, act).obs)
    x = np.concatenate(per_seed).astype(np.float32)
    drift, out = guard.scores(x)
    flag = guard.flags(x)
    z = (x - guard._mean) * guard._inv_sigma
    z2 = np.where(x <= guard._atom, 0.0, np.minimum(z * z, 16.0))
    out_f = np.abs(x - guard._mid) * guard._inv_half > 1.0
    counts: dict[str, int] = {}
    for i in np.flatnonzero(flag):
        for j in np.flatnonzero(out_f[i]):
            counts[f"range {SCHEMA.names[j]}"] = counts.get(f"range {SCHEMA.names[j]}", 0) + 1
        for j in np.argsort(-z2[i])[:3]:
            counts[f"z {SCHEMA.names[j]}"] = counts.get(f"z {SCHEMA.names[j]}", 0) + 1
    top = []
    for key, c in sorted(counts.items(), key=lambda kv: -kv[1])[:15]:
        j = SCHEMA.names.index(key.split(" ", 1)[1])
        top.append({"feature": key, "count": c, "train_mean": round(float(guard.stats.mean[j]), 3),
                    "train_sd": round(float(np.sqrt(guard.stats.var[j])), 3),
                    "flagged_p10_p50_p90": np.percentile(x[flag, j], [10, 50, 90]).round(3).tolist() if flag.any()
                    else []})
        print(f"{c:5d}  {key:45s} train mean {top[-1]['train_mean']} sd {top[-1]['train_sd']} "
              f"flagged p10/50/90 {top[-1]['flagged_p10_p50_p90']}")
    print(json.dumps({"n": len(x), "flagged": float(flag.mean()),
                      "per_seed": [float(guard.flags(o).mean()) for o in per_seed],
                      "drift_over_1_by_block": (drift > 1).mean(0).round(4).tolist(),
                      "out_of_range_by_block": out.mean(0).round(4).tolist(), "top": top}))


if __name__ == "__main__":
    main()
