"""Validation-only diagnostic (issue 11): does the supervised teacher over-predict the large model's value?

Rolls the teacher (a ``supervised.pt`` written by the study) over validation episodes of its scenario and,
at every ``--every``-th decision, compares its predicted reward difference large − small with the one a
simulator fork measures (:class:`rlroute.policies.whatif.WhatIf`, horizon 0 — the teacher's own label
definition). Prints one JSON line: mean predicted and forked differences, the share of decisions each says
large is better, their correlation, and the forked regret of following the prediction.

    python experiments/scenarios/tuning/teacher_check.py --model outputs/study/lambda/cw50/token_api/supervised.pt \
        scenario=token_api reward.cost_weight=50
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from rlroute.env import build_env
from rlroute.env.build import default_config
from rlroute.policies.supervised import SupervisedRouter
from rlroute.policies.whatif import WhatIf
from rlroute.types import Action


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1002, 1003])
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    cfg = default_config(a.overrides)
    teacher = SupervisedRouter(model_path=a.model)
    env, whatif = build_env(cfg, split="val"), WhatIf("p")
    pred, true = [], []
    for seed in a.seeds:
        env.reset(seed=seed)
        whatif.bind(env)
        done, k = False, 0
        while not done:
            ctx = env.decision_context()
            if k % a.every == 0:
                y = whatif.rewards(ctx)
                p = teacher.predict(ctx.obs)
                if np.isfinite(y[Action.LARGE]) and np.isfinite(y[Action.SMALL]):
                    pred.append(p[Action.LARGE] - p[Action.SMALL])
                    true.append(y[Action.LARGE] - y[Action.SMALL])
            k += 1
            _, _, term, trunc, _ = env.step(int(teacher.act(ctx)))
            done = bool(term or trunc)
    env.close()
    pd, td = np.array(pred), np.array(true)
    follow = np.where(pd > 0, td, 0.0)  # forked gain over small of following the prediction (large vs small only)
    best = np.maximum(td, 0.0)
    print(json.dumps({"model": a.model, "overrides": a.overrides, "n": len(pd),
                      "pred_diff_mean": float(pd.mean()), "fork_diff_mean": float(td.mean()),
                      "pred_large_better": float((pd > 0).mean()), "fork_large_better": float((td > 0).mean()),
                      "corr": float(np.corrcoef(pd, td)[0, 1]),
                      "regret_per_decision": float((best - follow).mean())}))


if __name__ == "__main__":
    main()
