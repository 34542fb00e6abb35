"""Pilot (post hoc, TRAIN and VALIDATION splits only; not a result): does PPO warm-started from a static-advantage
teacher keep the static ranker's edge on provisioned_fleet?

The ranking probe (``ranker_probe.py``) found a ridge regression of the 224 features, fitted to ~80k static labels
(each action's quality probability minus its decision-time price, no forks), ~0.01 above every rule on
provisioned_fleet's val split, where run 4's PPO trailed the threshold rule. The study's warm start
(``rlroute/train/warmstart.py``) clones a teacher's decisions into PPO's actor before PPO trains; its teacher is
the fork-labelled supervised router (~1.2k labels). Here the teacher is a ridge regression of every action's
*static* reward (``quality_weight * p_a - cost_weight * price_a``; on provisioned_fleet the price is the same for
every action) fitted on train-split decisions (all-small with 30 % large calls), deciding by its best predicted
action; everything else is the warm start and the PPO of run 4's provisioned_fleet command (245,760 decisions,
``agent.quality_baseline=small``). The teacher is put in through the registry's ``make_policy`` for the name
``supervised`` (this script only; the package is unchanged). Arms per training seed: PPO from scratch, PPO
warm-started from the static teacher, and the teacher alone; the kept snapshot (best on val seeds 1000-1001) is
reported on val seeds 1002-1003.

    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/tuning/static_teacher_pilot.py --seed 0 \\
        --arm warm --out experiments/scenarios/tuning/static_teacher/warm_seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import open_dict

import rlroute.policies.registry as registry
from rlroute.eval.run import default_env_factory, evaluate
from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.sb3 import SB3Policy
from rlroute.policies.supervised import SupervisedRouter
from rlroute.train.trainer import train_run
from rlroute.types import Action

sys.path.insert(0, str(Path(__file__).parent))
from ranker_probe import mean_reward, workload_config  # noqa: E402  (a sibling script, not a package)


class StaticRecorder(Policy):
    """All-small with ``explore`` large calls; records each decision's observation and every action's static
    reward."""

    name = "static_recorder"

    def __init__(self, cfg: Any, explore: float = 0.3) -> None:
        self.qw, self.cw = float(cfg.reward.quality_weight), float(cfg.reward.cost_weight)
        self.explore = explore
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []

    def bind_env(self, env: Any) -> None:
        self._env = getattr(env, "unwrapped", env)

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def act(self, ctx: DecisionContext) -> Action:
        q = ctx.request.quality
        assert q is not None
        price = self._env.expected_cost
        self.x.append(np.asarray(ctx.obs, dtype=np.float64))
        self.y.append(np.array([self.qw * q.p[a] - self.cw * price(ctx.request, a) for a in Action]))
        return Action.LARGE if self._rng.random() < self.explore else Action.SMALL


class StaticTeacher(SupervisedRouter):
    """Ridge regression of every action's static reward on the observation; the supervised router's decision rule
    (best predicted allowed action, ties to the cheaper) and score on top of it."""

    def __init__(self, episodes: int, l2: float = 1.0) -> None:
        super().__init__()
        self.episodes, self.l2 = episodes, l2

    def prepare(self, cfg: Any) -> None:
        if self.meta:  # fitted already (the script prepares it before the warm start asks again)
            return
        rec = StaticRecorder(cfg)
        env = default_env_factory(cfg, "train")
        try:
            evaluate(rec, cfg, "train", [40_000 + k for k in range(self.episodes)], reference_cost={}, env=env)
        finally:
            env.close()
        x, y = np.stack(rec.x), np.stack(rec.y)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        z = (x - self.mu) / self.sd
        self.b = y.mean(0)
        self.w = np.linalg.solve(z.T @ z + self.l2 * np.eye(z.shape[1]), z.T @ (y - self.b))
        self.meta = {"n_labels": len(y)}

    def predict(self, obs: np.ndarray) -> np.ndarray:
        return ((np.asarray(obs, dtype=np.float64) - self.mu) / self.sd) @ self.w + self.b  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="provisioned_fleet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arm", choices=("scratch", "warm"), default="warm")
    ap.add_argument("--steps", type=int, default=245_760)
    ap.add_argument("--teacher-episodes", type=int, default=40)
    ap.add_argument("--runs", default="outputs/static_teacher")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.time()
    _, cfg = workload_config("", args.scenario, [f"total_timesteps={args.steps}",
                                                 "overrides=['agent.quality_baseline=small']"])
    with open_dict(cfg):
        cfg.seed = args.seed
        if args.arm == "warm":
            cfg.agent.warm_start.teacher = "supervised"
    teacher = StaticTeacher(args.teacher_episodes)
    out: dict[str, Any] = {"scenario": args.scenario, "seed": args.seed, "arm": args.arm, "steps": args.steps}
    if args.arm == "warm":
        original = registry.make_policy

        def make_policy(spec: Any, **kw: Any) -> Any:
            return teacher if spec == "supervised" else original(spec, **kw)

        registry.make_policy = make_policy  # the warm start imports it from the registry at call time
        teacher.prepare(cfg)  # the warm start's own prepare() call then keeps this fit
        out["teacher"] = {**mean_reward(teacher, cfg, [1002, 1003]), **teacher.meta}
    run = Path(train_run(cfg, Path(args.runs) / args.scenario / args.arm / f"seed{args.seed}").run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    out["ppo_kept"] = mean_reward(SB3Policy(str(run), name="ppo"), cfg, [1002, 1003])
    out["best_step"] = metrics.get("best_step")
    out["seconds"] = time.time() - t0
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
