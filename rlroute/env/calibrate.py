"""Check that a reward preset has a real trade-off: returns of fixed routing rules in the env.

``python -m rlroute.env.calibrate [hydra overrides] [--seeds 0 1] [--episode-length 512]`` runs all-large,
all-small, all-hybrid and the hindsight rules "large iff p_large - p_small > d" (d = 0.1, 0.2, 0.3; they
read the request's drawn success probabilities, so they are upper-bound style references, not policies a
router could run) and prints the mean return and its reward terms per rule. The numbers quoted in
``conf/reward/*.yaml`` come from this command, e.g. ``python -m rlroute.env.calibrate reward=cost_sensitive``.
A preset is useful for learning when neither all-large nor all-small is the best rule.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from rlroute.env.build import build_env, default_config
from rlroute.env.routing import RoutingEnv
from rlroute.policies.base import DecisionContext
from rlroute.types import Action

Rule = Callable[[DecisionContext], Action]


def gain_rule(delta: float) -> Rule:
    """Hindsight rule: large when the large model's success probability beats the small one's by ``delta``."""

    def act(ctx: DecisionContext) -> Action:
        q = ctx.request.quality
        if q is None:
            raise ValueError("gain rule needs request.quality (drawn by the env)")
        return Action.LARGE if q.p[0] - q.p[1] > delta else Action.SMALL

    return act


RULES: dict[str, Rule] = {
    "all_large": lambda ctx: Action.LARGE,
    "all_small": lambda ctx: Action.SMALL,
    "all_hybrid": lambda ctx: Action.HYBRID,
    "gain>0.1": gain_rule(0.1),
    "gain>0.2": gain_rule(0.2),
    "gain>0.3": gain_rule(0.3),
}


def episode(env: RoutingEnv, rule: Rule, seed: int) -> dict[str, float]:
    """Return and summed weighted reward terms of one episode of ``rule``."""
    env.reset(seed=seed)
    out = {"return": 0.0, "quality": 0.0, "cost": 0.0, "latency": 0.0, "slo": 0.0}
    done = False
    while not done:
        _, r, term, trunc, info = env.step(int(rule(env.decision_context())))
        out["return"] += r
        for k, v in info["reward_terms"].items():
            out[k] += v
        done = term or trunc
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the table of rule returns for the composed config."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. reward=cost_sensitive")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--episode-length", type=int, default=512)
    args = ap.parse_args(argv)
    cfg = default_config([f"episode_length={args.episode_length}", *args.overrides])
    env = build_env(cfg, split="train")
    print(f"overrides={args.overrides} seeds={args.seeds} episode_length={args.episode_length}")
    print(f"{'rule':<11} {'return':>8} {'quality':>8} {'cost':>8} {'latency':>8} {'slo':>8}")
    for name, rule in RULES.items():
        runs = [episode(env, rule, s) for s in args.seeds]
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        print(f"{name:<11} " + " ".join(f"{mean[k]:8.1f}" for k in ("return", "quality", "cost", "latency", "slo")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
