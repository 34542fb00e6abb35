"""Pick the quickstart reward on the VALIDATION split: fixed rules and baselines under candidate presets.

For each candidate (Hydra overrides on top of ``experiment=quickstart``) it evaluates all-large, all-small,
all-hybrid, the threshold router (observable text only) and the hindsight gain rule "large iff p_large -
p_small > d" (reads the true probabilities: an upper-bound reference) through the evaluation harness on the
``val`` split, and prints reward per decision plus the paired difference (mean ± 95 % t over seeds) of the
best observable rule vs the better of all-small/all-large. The numbers quoted in
``conf/experiment/quickstart.yaml`` come from this script::

    .venv/bin/python experiments/ppo_vs_baselines/quickstart/calibrate_reward.py \
        --candidate "reward.slo_ttft_s=5.0" --seeds 1000 1001 1002
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from rlroute.eval.stats import t_interval
from rlroute.policies.base import DecisionContext, Policy
from rlroute.train.quickstart import compose
from rlroute.types import Action


class GainRule(Policy):
    """Hindsight rule: large when the request's true p_large - p_small exceeds ``delta``."""

    def __init__(self, delta: float) -> None:
        self.delta = delta

    def reset(self, rng: object) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        """Large iff the true gain exceeds delta."""
        q = ctx.request.quality
        assert q is not None
        return Action.LARGE if q.p[0] - q.p[1] > self.delta else Action.SMALL


class ObservableRule(Policy):
    """Bayes rule on the observable difficulty: large iff E[p_large - p_small | z_r] beats the cost gap.

    E[. | z_r] integrates the hidden difficulty out (the latent quality model's Gauss-Hermite nodes), so the
    rule uses only what the request shows (plus the env's decision-time price, which uses the true output
    length: a slightly optimistic reference for what a router reading the request could reach).
    """

    def __init__(self, env: Any, margin: float = 0.0) -> None:
        self.env, self.margin = env, margin

    def reset(self, rng: object) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        """Large iff the expected quality gain exceeds the weighted cost gap (plus ``margin``)."""
        from rlroute.quality.latent import _GH_W, _GH_X

        q, rc, r = self.env.quality, self.env.reward_cfg, ctx.request
        w = q.observable_share
        d = q.tau * (math.sqrt(w) * q.observable(r) + math.sqrt(1.0 - w) * _GH_X)
        gain = float(((1 / (1 + np.exp(d - q.a_large))) - (1 / (1 + np.exp(d - q.a_small)))) @ _GH_W)
        dcost = self.env.expected_cost(r, Action.LARGE) - self.env.expected_cost(r, Action.SMALL)
        return Action.LARGE if rc.quality_weight * gain - rc.cost_weight * dcost > self.margin else Action.SMALL


def main() -> None:
    """Print the table for each candidate."""
    from rlroute.env.build import build_env
    from rlroute.eval.run import evaluate

    ap = argparse.ArgumentParser()
    ap.add_argument("--candidate", action="append", default=[], help="space-separated Hydra overrides")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.2, 0.5],
                    help="threshold router variants: share of training requests routed large")
    ap.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    args = ap.parse_args()
    for cand in args.candidate or [""]:
        cfg = compose(cand.split())
        env = build_env(cfg, split="val")
        ref = {int(s): 1.0 for s in args.seeds}  # cost saving is not used here
        res = {}
        pols: dict[str, object] = {"all_large": "all_large", "all_small": "all_small", "all_hybrid": "all_hybrid",
                                   "threshold": "threshold"}
        pols.update({f"thr@{share}": {"_target_": "rlroute.policies.threshold.ThresholdRouter", "large_share": share,
                                      "cache_dir": "outputs/cache"} for share in args.shares})
        pols.update({f"obs+{m}": ObservableRule(env, m) for m in (0.0, 0.02, 0.05)})
        pols.update({f"gain>{d}": GainRule(d) for d in args.deltas})
        for name, pol in pols.items():
            r = evaluate(pol, cfg, "val", args.seeds, reference_cost=ref, env=env)  # type: ignore[arg-type]
            res[name] = np.array([s["reward"] for s in r.per_seed])
        best_const = "all_small" if res["all_small"].mean() >= res["all_large"].mean() else "all_large"
        print(f"== candidate: {cand or '(quickstart as is)'}  seeds {args.seeds}")
        for name, v in res.items():
            d = t_interval(v - res[best_const])
            print(f"  {name:<11} {v.mean():.4f}   vs {best_const}: {d.mean:+.4f} ± {d.half_width:.4f}")
        env.close()


if __name__ == "__main__":
    main()
