"""Can the 224 features rank requests by their large-model gain when trained with plentiful labels? (post hoc,
TRAIN and VALIDATION splits only; a diagnostic for the next study, not a result.)

Every learned router so far ties or trails the threshold rule, and the diagnostics point at the ranking of
requests (LOWO runs 4-5, the lambda sweep's teacher check: the fork-labelled supervised router's predicted
large - small correlates only 0.16-0.31 with the forked difference, from ~1.2k labels). This probe separates the
two possible causes on one labelled workload (``mmlu_poisson``: MMLU prompts with their per-model correctness
labels, Poisson arrivals), in distribution (the workload's own train split, as the threshold rule is fitted):

* **information**: a ridge regression and a small MLP on the raw 224-dim observation, fitted on ``n`` train
  decisions to the request's *static* advantage ``d = (p_large - p_small) - lambda * (cost_large - cost_small)``
  (the quality model's probabilities -- the dataset's labels here -- and the env's decision-time prices with the
  realised reply; no forks, so labels are cheap), scored on val decisions by the correlation of the prediction
  with ``d`` and by the AUC for ``d > 0``, beside the threshold rule's P(needed) on the same requests;
* **routing**: "large when the prediction exceeds tau", tau set per target large share on val seeds 1000-1001
  (as the study tunes the threshold rule's share), reported on val seeds 1002-1003 with the threshold rule
  tuned the same way and all-small.

If the features rank as well as the threshold rule's n-grams, the learned policies' problem is their training
signal (PPO's reward noise, the teacher's few labels) and a static-label teacher is the next thing to try; if
not, the request block's text representation is.

With ``--train-on`` the ranker is fitted on other workloads' train splits instead (leave-one-workload-out: does
the ranking transfer?). The runs behind ``experiments/scenarios/tuning/ranker_probe/`` (README, "What limits the
learned routers: a ranking probe"):

    all="sharegpt synthetic azure_code mooncake_conversation mmlu_poisson"
    for m in $all; do others=$(echo $all | tr ' ' '\n' | grep -vx $m | paste -sd,)
      RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/tuning/ranker_probe.py --member $m \
        --train-episodes 40 --out experiments/scenarios/tuning/ranker_probe/${m}_in.json
      RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/tuning/ranker_probe.py --member $m \
        --train-episodes 10 --train-on $others --out experiments/scenarios/tuning/ranker_probe/${m}_lowo.json
    done
    for sc in token_api provisioned_fleet; do RLROUTE_SHARED_DATA=/work/shared/data python \
      experiments/scenarios/tuning/ranker_probe.py --scenario $sc --train-episodes 40 \
      --out experiments/scenarios/tuning/ranker_probe/scenario_${sc}.json; done
    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/tuning/ranker_probe.py --scenario provisioned_fleet \
      --train-episodes 40 --shares 0.5,0.6,0.7,0.8,0.9,0.95 \
      --out experiments/scenarios/tuning/ranker_probe/scenario_provisioned_fleet_wide.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from torch import nn

from rlroute.eval.run import default_env_factory, evaluate
from rlroute.paths import CONF_DIR
from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.registry import make_policy
from rlroute.study.lowo import available_members
from rlroute.study.runner import compose, scenario_overrides
from rlroute.types import Action

SHARES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass
class Recorder(Policy):
    """Decides as ``inner`` (large with probability ``explore``, to vary the load) and records, per decision,
    the observation, the static advantage of large over small and the threshold rule's score."""

    inner: Policy = field(default_factory=lambda: make_policy("all_small"))
    cost_weight: float = 0.0
    threshold: Any = None
    explore: float = 0.0
    name: str = "recorder"
    rows: list[tuple[np.ndarray, float, float]] = field(default_factory=list)

    def bind_env(self, env: Any) -> None:
        self._env = getattr(env, "unwrapped", env)

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self.inner.reset(rng)

    def act(self, ctx: DecisionContext) -> Action:
        q = ctx.request.quality
        assert q is not None
        price = self._env.expected_cost
        d = (q.p[Action.LARGE] - q.p[Action.SMALL]) - self.cost_weight * (
            price(ctx.request, Action.LARGE) - price(ctx.request, Action.SMALL))
        s = self.threshold.score(ctx) if self.threshold is not None else float("nan")
        self.rows.append((np.array(ctx.obs, dtype=np.float32), float(d), float(s)))
        if self.explore and self._rng.random() < self.explore:
            return Action.LARGE
        return self.inner.act(ctx)


@dataclass
class Ranker(Policy):
    """Large when the fitted model's predicted static advantage exceeds ``tau``."""

    predict: Any = None
    tau: float = 0.0
    name: str = "ranker"

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def act(self, ctx: DecisionContext) -> Action:
        return Action.LARGE if float(self.predict(ctx.obs[None, :])[0]) > self.tau else Action.SMALL


def auc(score: np.ndarray, y: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half (Mann-Whitney)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]  # average ranks for ties
    pos = y.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)) if n1 and n0 else float("nan")


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> Any:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + l2 * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    b = y.mean()
    return lambda o: ((np.asarray(o, dtype=np.float64) - mu) / sd) @ w + b


def fit_mlp(x: np.ndarray, y: np.ndarray, epochs: int = 200, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    net = nn.Sequential(nn.Linear(x.shape[1], 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 256):
            idx = perm[i:i + 256]
            opt.zero_grad()
            loss = ((net(xt[idx]).squeeze(1) - yt[idx]) ** 2).mean()
            loss.backward()
            opt.step()
    net.eval()

    def predict(o: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.tensor((np.asarray(o) - mu) / sd, dtype=torch.float32)).squeeze(1).numpy()

    return predict


def record(cfg: Any, split: str, seeds: list[int], threshold: Any, explore: float) -> tuple[np.ndarray, ...]:
    rec = Recorder(cost_weight=float(cfg.reward.cost_weight), threshold=threshold, explore=explore)
    env = default_env_factory(cfg, split)
    try:
        evaluate(rec, cfg, split, seeds, reference_cost={}, env=env)
    finally:
        env.close()
    x = np.stack([r[0] for r in rec.rows])
    return x, np.array([r[1] for r in rec.rows]), np.array([r[2] for r in rec.rows])


def mean_reward(policy: Any, cfg: Any, seeds: list[int]) -> dict[str, float]:
    res = evaluate(policy, cfg, "val", seeds, reference_cost={})
    return {"reward": float(np.mean([m["reward"] for m in res.per_seed])),
            "large_share": float(np.mean([m["strong_share"] for m in res.per_seed]))}


def workload_config(member: str, scenario: str | None = None, extra: Sequence[str] = ()) -> tuple[Any, Any]:
    """``(study, cfg)`` as the study composes them: ``scenario``'s config (a conf/scenario/ file, dedicated regime)
    when given, else the LOWO ``member``'s; ``extra``: more study overrides."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        study = hydra_compose("study", overrides=["mode=lowo", *extra, *([f"scenarios=[{scenario}]", "~regimes.colocated"]
                                                                         if scenario else [])])
    if scenario:
        return study, compose(study, scenario_overrides(study)[scenario])
    return study, available_members(study)[0][member]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--member", default="mmlu_poisson", help="a LOWO member (conf/study.yaml lowo.members)")
    ap.add_argument("--scenario", default=None,
                    help="a conf/scenario/ file instead of --member (its dedicated regime, as the study composes it)")
    ap.add_argument("--train-episodes", type=int, default=40, help="train-split episodes per training workload")
    ap.add_argument("--train-on", default="",
                    help="comma-separated LOWO members whose train splits the ranker is fitted on (default: --member "
                         "itself, in distribution); e.g. the other four members, as leave-one-workload-out trains")
    ap.add_argument("--shares", default=",".join(map(str, SHARES)),
                    help="target large shares tau is set for (train-score quantiles), as the threshold rule's grid")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    shares = [float(x) for x in args.shares.split(",")]
    t0 = time.time()
    study, cfg = workload_config(args.member, args.scenario)
    if args.scenario:  # in distribution only
        args.member = args.scenario
        members = {args.member: cfg}
    else:
        members = available_members(study)[0]
    train_on = [m for m in args.train_on.split(",") if m] or [args.member]
    threshold = make_policy("threshold", large_share=0.2)
    threshold.prepare(cfg)
    # train decisions: all-small with 30 % large calls (a loaded large pool now and then), train split
    parts = [record(members[m], "train", [20_000 + k for k in range(args.train_episodes)], None, 0.3) for m in train_on]
    xtr, dtr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    xva, dva, sva = record(cfg, "val", [1000, 1001, 1002, 1003], threshold, 0.3)
    fits = {"ridge": fit_ridge(xtr, dtr), "mlp": fit_mlp(xtr, dtr)}
    out: dict[str, Any] = {"member": args.member, "train_on": train_on, "n_train": len(dtr), "n_val": len(dva),
                           "train_share_d_positive": float((dtr > 0).mean()), "val_share_d_positive": float((dva > 0).mean()),
                           "information": {"threshold_p_needed": {"corr": float(np.corrcoef(sva, dva)[0, 1]),
                                                                  "auc": auc(sva, dva > 0)}}}
    for name, f in fits.items():
        p = f(xva)
        out["information"][name] = {"corr": float(np.corrcoef(p, dva)[0, 1]), "auc": auc(p, dva > 0),
                                    "train_corr": float(np.corrcoef(f(xtr), dtr)[0, 1])}
    # routing on val: tau / share tuned on seeds 1000-1001, reported on 1002-1003
    tune, report = [1000, 1001], [1002, 1003]
    routing: dict[str, Any] = {"all_small": mean_reward("all_small", cfg, report)}
    best_t = max(shares, key=lambda s: mean_reward(make_policy("threshold", large_share=s), cfg, tune)["reward"])
    routing["threshold"] = {"share": best_t, **mean_reward(make_policy("threshold", large_share=best_t), cfg, report)}
    for name, f in fits.items():
        ptr = f(xtr)
        taus = {s: float(np.quantile(ptr, 1.0 - s)) for s in shares}
        best = max(shares, key=lambda s: mean_reward(Ranker(predict=f, tau=taus[s]), cfg, tune)["reward"])
        routing[name] = {"share": best, **mean_reward(Ranker(predict=f, tau=taus[best]), cfg, report)}
    out["routing_val_1002_1003"] = routing
    out["seconds"] = time.time() - t0
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
