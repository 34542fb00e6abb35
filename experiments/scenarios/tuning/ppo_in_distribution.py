"""PPO trained and validated on one workload (post hoc, TRAIN and VALIDATION splits only; a diagnostic beside
``ranker_probe.py``, not a result).

The ranking probe found that on azure_code a ridge regression of the 224 features on static advantages routes
for 0.4504 reward per decision on val seeds 1002-1003, against all-small's 0.3798 and the share-tuned threshold
rule's 0.3622: the per-request advantage there is mostly price (short replies), which the features show. Does
PPO, with the LOWO runs' settings (200k decisions, ``agent.quality_baseline=small``) but trained on that very
workload, find it? If it does, the learned policies' ties elsewhere are about the gain signal's noise; if not,
PPO's training signal misses even a ranking a linear model reads off the features.

    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/tuning/ppo_in_distribution.py \\
        --member azure_code --seed 0 --out experiments/scenarios/tuning/ranker_probe/ppo_azure_code_seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import open_dict

from rlroute.eval.run import evaluate
from rlroute.policies.sb3 import SB3Policy
from rlroute.train.trainer import train_run

sys.path.insert(0, str(Path(__file__).parent))
from ranker_probe import workload_config  # noqa: E402  (a sibling script, not a package)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--member", default="azure_code")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--runs", default="outputs/probe_ppo")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.time()
    _, cfg = workload_config(args.member, extra=['overrides=["agent.quality_baseline=small"]',
                                                 f"total_timesteps={args.steps}"])
    with open_dict(cfg):
        cfg.seed = args.seed
        cfg.agent.total_timesteps = args.steps
    run = train_run(cfg, Path(args.runs) / args.member / f"seed{args.seed}").run_dir
    out = {"member": args.member, "seed": args.seed, "steps": args.steps}
    for which, folder in (("kept", Path(run)), ("last", Path(run) / "last")):  # kept: the best-on-val snapshot
        res = evaluate(SB3Policy(str(folder), name="ppo"), cfg, "val", [1002, 1003], reference_cost={})
        out[which] = {"reward": float(np.mean([m["reward"] for m in res.per_seed])),
                      "large_share": float(np.mean([m["strong_share"] for m in res.per_seed]))}
    out["seconds"] = time.time() - t0
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
