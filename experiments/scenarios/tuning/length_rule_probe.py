"""A prompt-length rule on one workload (post hoc, VALIDATION split only; beside ``ranker_probe.py``).

The azure_code trace has no prompt text, and its latent quality is planted on the prompt's length (the
observable part of the difficulty, ``conf/quality/latent.yaml``) while its price grows with the length too: the
threshold rule's n-gram classifier has nothing to read there. Is the learned policies' val edge on it more
than a length cut? "Large when input_len <= L" and "large when input_len > L", L on a grid of 64 to 8,192 tokens,
chosen on val seeds 1000-1001 and reported on 1002-1003 (as ``ranker_probe.py``).

    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/tuning/length_rule_probe.py --member azure_code \\
        --out experiments/scenarios/tuning/ranker_probe/length_rule_azure_code.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from rlroute.eval.run import evaluate
from rlroute.paths import CONF_DIR
from rlroute.policies.base import DecisionContext, Policy
from rlroute.study.lowo import available_members
from rlroute.study.runner import compose, scenario_overrides
from rlroute.types import Action

CUTS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)  # prompt tokens


@dataclass
class LengthRule(Policy):
    """Large when the prompt is at most (``short``) or above (not ``short``) ``cut`` tokens."""

    cut: float = 0.0
    short: bool = True
    name: str = "length_rule"

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        return Action.LARGE if (ctx.request.input_len <= self.cut) == self.short else Action.SMALL


def val(policy: Policy, cfg: object, seeds: list[int]) -> dict[str, float]:
    res = evaluate(policy, cfg, "val", seeds, reference_cost={})
    return {"reward": float(np.mean([m["reward"] for m in res.per_seed])),
            "large_share": float(np.mean([m["strong_share"] for m in res.per_seed]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--member", default="azure_code", help="a LOWO member (conf/study.yaml lowo.members)")
    ap.add_argument("--scenario", default=None, help="a conf/scenario/ file instead (its dedicated regime)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        study = hydra_compose("study", overrides=["mode=lowo", *([f"scenarios=[{args.scenario}]", "~regimes.colocated"]
                                                                 if args.scenario else [])])
    if args.scenario:
        cfg = compose(study, scenario_overrides(study)[args.scenario])
        args.member = args.scenario
    else:
        cfg = available_members(study)[0][args.member]
    cuts = [float(c) for c in CUTS]
    grid = [(c, s) for c in cuts for s in (True, False)]
    tuned = {g: val(LengthRule(cut=g[0], short=g[1]), cfg, [1000, 1001])["reward"] for g in grid}
    best = max(grid, key=lambda g: tuned[g])
    out = {"member": args.member, "cut": best[0], "large_when_short": best[1],
           "val_1000_1001": tuned[best], "val_1002_1003": val(LengthRule(cut=best[0], short=best[1]), cfg, [1002, 1003])}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
