"""Validation-only tuning pilot for the scenario study (issue 11): PPO variants vs the baselines on `val`.

Never touches the test split. PPO keeps its best snapshot on val seeds 1000-1001 (as the study does);
everything is then scored on val seeds 1002-1005 (disjoint from the snapshot choice), so the comparison
between variants is not biased by the snapshot selection. Writes one JSON line per (variant, seed) to
``--out`` (appending), and the baselines once per scenario.

    python experiments/scenarios/tuning/pilot_val.py --scenario provisioned_fleet --steps 40960 \
        --variant base: --variant env1:agent.n_envs=1 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from omegaconf import open_dict

from rlroute.env.build import default_config
from rlroute.eval.run import default_env_factory, evaluate
from rlroute.policies.registry import make_policy
from rlroute.policies.sb3 import SB3Policy
from rlroute.train.trainer import train_run

SELECT = [1000, 1001]
SCORE = [1002, 1003, 1004, 1005]


def compose(scenario: str, overrides: list[str], steps: int, episode_length: int | None) -> object:
    cfg = default_config([f"scenario={scenario}", *overrides])
    with open_dict(cfg):
        if episode_length:
            cfg.episode_length = episode_length
            cfg.agent.algo.n_steps = episode_length * max(1, int(cfg.agent.algo.n_steps) // episode_length)
        cfg.agent.total_timesteps = steps
        cfg.agent.eval.seeds = SELECT
        cfg.agent.eval.freq = max(steps // 5, 1)
        cfg.agent.progress_bar = False
        cfg.agent.checkpoint_freq = 0
    return cfg


def score(policy: object, cfg: object, seeds: list[int] = SCORE) -> list[float]:
    env = default_env_factory(cfg, "val")
    res = evaluate(policy, cfg, "val", seeds, reference_cost={}, env=env)
    env.close()
    return [float(m["reward"]) for m in res.per_seed]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--steps", type=int, default=40960)
    ap.add_argument("--episode-length", type=int, default=None)
    ap.add_argument("--variant", action="append", default=[], help="name:override,override,...")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--baselines", nargs="*", default=[])
    ap.add_argument("--common", nargs="*", default=[], help="overrides applied to every variant and baseline")
    ap.add_argument("--score-seeds", type=int, nargs="+", default=SCORE, help="val seeds scored (baselines)")
    ap.add_argument("--out", default="experiments/scenarios/tuning/pilot_val.jsonl")
    ap.add_argument("--runs", default="outputs/tuning")
    a = ap.parse_args()
    out = Path(a.out)
    for name in a.baselines:
        cfg = compose(a.scenario, a.common, a.steps, a.episode_length)
        t0 = time.perf_counter()
        base, _, kw = name.partition("@")  # threshold@0.5 = large_share 0.5; reward_oracle@horizon=4
        if base == "threshold" and kw:
            pol: object = make_policy("threshold", large_share=float(kw))
        elif kw:
            k, _, v = kw.partition("=")  # supervised@model_path=PATH, reward_oracle@horizon=4
            pol = make_policy(base, **{k: v if k == "model_path" else int(v)})
        else:
            pol = name
        r = score(pol, cfg, a.score_seeds)
        rec = {"scenario": a.scenario, "policy": name, "common": a.common, "seeds": a.score_seeds, "val_rewards": r,
               "mean": float(np.mean(r)), "seconds": time.perf_counter() - t0}
        print(json.dumps(rec), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
    for spec in a.variant:
        vname, _, ov = spec.partition(":")
        overrides = [*a.common, *[o for o in ov.split(",") if o]]
        for seed in a.seeds:
            cfg = compose(a.scenario, [*overrides, f"seed={seed}"], a.steps, a.episode_length)
            run_dir = Path(a.runs) / a.scenario / vname / f"seed{seed}"
            t0 = time.perf_counter()
            train_run(cfg, run_dir)
            r = score(SB3Policy(run_dir), cfg)
            rec = {"scenario": a.scenario, "policy": f"ppo[{vname}]", "overrides": overrides, "seed": seed,
                   "steps": a.steps, "val_rewards": r, "mean": float(np.mean(r)),
                   "seconds": time.perf_counter() - t0}
            print(json.dumps(rec), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
