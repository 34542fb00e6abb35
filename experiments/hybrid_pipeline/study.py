"""Serial vs pipelined hybrid, and whether hybrid becomes worth choosing (experiments/hybrid_pipeline/README.md).

Part A (``modes``): every policy of ``--policies`` in both hybrid modes on the same seeds (same requests and
quality draws: only the mode differs), per-seed metrics from the evaluation harness's own episode loop
(:func:`rlroute.eval.run.run_episode`, :func:`rlroute.eval.metrics.episode_metrics`) plus the small pool's
engine-side prefix-cache counters read from the env's cluster after each episode; paired differences
(pipelined - serial) with 95 % Student-t intervals over seeds.

Part B (``sweep``): the same loop over the plan's assumed quality ``share`` (quality.hybrid.share) x mode for
the non-learned policies; all_small and all_large do not depend on either, so they run once per seed.

    PYTHONPATH=. nice -n 10 python experiments/hybrid_pipeline/study.py modes --seeds 0 1 2 3 4 --out A.json
    PYTHONPATH=. nice -n 10 python experiments/hybrid_pipeline/study.py sweep --seeds 0 1 2 3 4 --out B.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from rlroute.env import build_env
from rlroute.eval.baselines import compose
from rlroute.eval.metrics import episode_metrics
from rlroute.eval.run import run_episode, slo_targets
from rlroute.policies.registry import make_policy

MODES = ("plan_and_execute", "pipelined")
KEYS = ("reward", "quality", "cost_per_1k", "ttft_mean", "ttft_p50", "ttft_p99", "e2e_mean", "e2e_p99",
        "slo_attainment", "slo_4s", "mix_hybrid", "small_hit_rate", "small_prefilled_per_req",
        "small_cached_per_req", "small_evicted_per_req")


def episode(overrides: Sequence[str], policy_name: str, seed: int, split: str) -> dict[str, float]:
    """One evaluation episode of ``policy_name`` under ``overrides``: the harness's metrics, the reward per
    decision, hybrid-TTFT SLO attainment at 4 s, and the small pool's engine cache counters."""
    cfg = compose(list(overrides))
    env = build_env(cfg, split=split)
    policy = make_policy(policy_name)
    policy.prepare(cfg)
    records, ret = run_episode(env, policy, seed, split)
    slo_ttft, slo_tpot, slo_hybrid = slo_targets(cfg)
    m = episode_metrics(records, slo_ttft, slo_tpot, slo_hybrid)
    ok = [r for r in records if not r["failed"]]
    ttft = np.array([r["ttft"] for r in ok])
    e2e = np.array([r["e2e"] for r in ok])
    small = env.cluster.pools["small"].instances
    evicted = sum(i.cache.evicted_tokens for i in small)
    hit = sum(i.cache.hit_tokens for i in small)
    miss = sum(i.cache.miss_tokens for i in small)
    n = len(records)
    out = {k: float(v) for k, v in m.items()}
    out.update(reward=ret / n, ttft_mean=float(ttft.mean()), e2e_mean=float(e2e.mean()),
               slo_4s=float(np.mean([r["ttft"] <= 4.0 and not r["failed"] for r in records])),
               small_hit_rate=hit / (hit + miss) if hit + miss else float("nan"),
               small_prefilled_per_req=miss / n, small_cached_per_req=hit / n, small_evicted_per_req=evicted / n)
    env.close()
    return out


def interval(x: Sequence[float]) -> dict[str, float]:
    """Mean and 95 % Student-t half-width over seeds."""
    a = np.asarray(x, dtype=float)
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")
    return {"mean": float(a.mean()), "half": half}


def mode_overrides(mode: str, base: Sequence[str]) -> list[str]:
    return [*base, f"quality.hybrid.mode={mode}"]


def part_a(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"policies": {}}
    for pol in args.policies:
        per: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for seed in args.seeds:
            for mode in MODES:
                per[mode].append(episode(mode_overrides(mode, args.overrides), pol, seed, args.split))
        out["policies"][pol] = {
            "per_seed": per,
            "serial": {k: interval([r[k] for r in per["plan_and_execute"]]) for k in KEYS},
            "pipelined": {k: interval([r[k] for r in per["pipelined"]]) for k in KEYS},
            "paired_diff": {k: interval([p[k] - s[k] for p, s in zip(per["pipelined"], per["plan_and_execute"],
                                                                    strict=True)]) for k in KEYS},
        }
    return out


def part_b(args: argparse.Namespace) -> dict[str, Any]:
    fixed = {pol: [episode(args.overrides, pol, s, args.split) for s in args.seeds] for pol in ("all_small", "all_large")}
    best_fixed = [max(a["reward"], b["reward"]) for a, b in zip(fixed["all_small"], fixed["all_large"], strict=True)]
    out: dict[str, Any] = {"fixed": {p: {k: interval([r[k] for r in v]) for k in KEYS} for p, v in fixed.items()},
                           "sweep": []}
    for share in args.shares:
        for mode in args.modes:
            ov = mode_overrides(mode, [*args.overrides, f"quality.hybrid.share={share}"])
            for pol in args.policies:
                runs = [episode(ov, pol, s, args.split) for s in args.seeds]
                out["sweep"].append({
                    "share": share, "mode": mode, "policy": pol,
                    **{k: interval([r[k] for r in runs]) for k in ("reward", "quality", "mix_hybrid", "cost_per_1k",
                                                                    "ttft_p50", "slo_attainment")},
                    "vs_all_small": interval([r["reward"] - f["reward"] for r, f in zip(runs, fixed["all_small"],
                                                                                       strict=True)]),
                    "vs_best_fixed": interval([r["reward"] - b for r, b in zip(runs, best_fixed, strict=True)]),
                    "per_seed_reward": [r["reward"] for r in runs],
                })
                print(json.dumps({k: out["sweep"][-1][k] for k in ("share", "mode", "policy", "reward", "mix_hybrid",
                                                                   "vs_best_fixed")}), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("modes", "sweep"), help="modes: part A (add --policies to change the "
                    "policy); sweep: part B")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--policies", nargs="+", default=None)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="sweep: hybrid modes to run")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the root config (e.g. episode_length=1024)")
    args = ap.parse_intermixed_args(argv)
    if args.policies is None:
        args.policies = ["all_hybrid"] if args.part == "modes" else ["all_hybrid", "reward_oracle"]
    t0 = time.perf_counter()
    result = part_a(args) if args.part == "modes" else part_b(args)
    result["meta"] = {"part": args.part, "seeds": args.seeds, "split": args.split, "overrides": args.overrides,
                      "policies": args.policies, "shares": args.shares if args.part == "sweep" else None,
                      "modes": args.modes,
                      "wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['meta']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
