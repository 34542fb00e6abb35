"""Paired per-seed reward differences for experiments/scenarios/reward_credit.md (same val episodes for all).

    .venv/bin/python experiments/scenarios/reward_credit_paired.py /tmp/reward_credit/{request,park}-seed{0,1} ...

Evaluates each training run (SB3 policy of its folder) and the threshold router and all-small on
scenario=provisioned_fleet, split val, seeds 1000-1004 (per-request accounting), and prints each policy's
reward per decision per seed and its paired difference to the threshold router and to all-small
(mean and 95 % Student-t interval over the 5 paired seeds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rlroute.env import build_env, default_config
from rlroute.eval.run import evaluate
from rlroute.eval.stats import t_interval
from rlroute.policies.sb3 import SB3Policy

SEEDS = [1000, 1001, 1002, 1003, 1004]


def main() -> None:
    cfg = default_config(["scenario=provisioned_fleet"])
    env = build_env(cfg, split="val")
    ref = {s: 1.0 for s in SEEDS}  # cost saving is not used here; skip the all-large reference runs
    per: dict[str, np.ndarray] = {}
    for name in ["all_small", "threshold"]:
        res = evaluate(name, cfg, split="val", seeds=SEEDS, reference_cost=ref, env=env)
        per[name] = np.array([m["reward"] for m in res.per_seed])
    for run in sys.argv[1:]:
        res = evaluate(SB3Policy(run), cfg, split="val", seeds=SEEDS, reference_cost=ref, env=env)
        per[Path(run).name] = np.array([m["reward"] for m in res.per_seed])
    print(f"{'policy':<20} " + " ".join(f"{s:>7}" for s in SEEDS) + "   minus threshold        minus all_small")
    for name, r in per.items():
        d_t, d_s = t_interval(list(r - per["threshold"])), t_interval(list(r - per["all_small"]))
        print(f"{name:<20} " + " ".join(f"{x:7.3f}" for x in r)
              + f"   {d_t.mean:+.3f} [{d_t.low:+.3f}, {d_t.high:+.3f}]   {d_s.mean:+.3f} [{d_s.low:+.3f}, {d_s.high:+.3f}]",
              flush=True)


if __name__ == "__main__":
    main()
