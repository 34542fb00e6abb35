"""``rlroute bench ope``: is ``rlroute ope``'s estimate of a candidate right? Checked in the simulator (issue 17 item 4).

Per repetition (a seed): a window of the built-in synthetic workload goes through a simulated cluster (1 large
``qwen3-235b-a22b-fp8__h100x8`` + 2 small ``qwen3-4b__h100`` instances, the parity bench's layout) twice:

1. **logged**: the incumbent (the seed heuristic) decides on the env's observation, with an exploration floor
   ``--epsilon`` (uniform over the allowed actions); each decision is written as a decision-log record
   (observation, executed action, its propensity, the completion's cost / e2e / SLO);
2. **on-policy**: the candidate (an exported folder, argmax, no OOD guard — as ``rlroute ope`` evaluates it)
   decides on the same requests.

``rlroute ope``'s :func:`~rlroute.eval.ope.evaluate` estimates the candidate's mean reward from the log; the
truth is the on-policy run's mean reward. The difference that matters is ``V_cand - V_inc`` (``V_inc`` = the
logged run's mean, the incumbent with its floor): per estimator, ``value`` = |mean over repetitions of the
estimated difference − mean of the on-policy difference| / |mean on-policy difference|, and per repetition
whether the estimate's 95 % interval covers the on-policy value (coverage). At a load below the pools' knee
requests barely interfere; at peak a different action changes the queues later requests meet, which the
estimators assume away: that bias is reported at ``--peak-rate``.

Reward: ``-cost_weight * cost - latency_weight * e2e_s`` (quality is not in a decision log).

Usage::

    rlroute bench ope [--policy FOLDER] [--reps 20] [--requests 1000] [--rate 3] [--peak-rate 20]
                      [--epsilon 0.2] [--latency-weight 0.001] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.bench import emit
from rlroute.offline.behaviour import EpsilonFloor, sim_record, write_records
from rlroute.types import Action, Request

LARGE, SMALL = "qwen3-235b-a22b-fp8__h100x8", "qwen3-4b__h100"


def _cluster() -> Any:
    from rlroute.cluster.sim import SimCluster

    ca = {"_target_": "rlroute.cluster.inpool.CacheAware"}
    cache = {"mem_fraction_static": "auto", "eviction": "lru"}
    return SimCluster(pools={"large": {"profile": LARGE, "instances": 1, "cache": cache, "in_pool": ca},
                             "small": {"profile": SMALL, "instances": 2, "cache": cache, "in_pool": ca}}, seed=0)


def _requests(rate: float, n: int, seed: int) -> list[Request]:
    from rlroute.bench.replay import load_requests

    return load_requests(["workload=synthetic", f"workload.rate={rate}"], "test", n, seed)


def run(reqs: list[Request], decide: Any) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """One pass through a fresh cluster; ``decide(req, state, matches, obs) -> (action, propensity)``."""
    from rlroute.features import FeatureExtractor

    cluster, fx = _cluster(), FeatureExtractor()
    rows, done = [], {}
    for r in reqs:
        for c in cluster.advance(r.arrival):
            done[c.request_id] = c
        st = cluster.state()
        m = cluster.prefix_match(r)
        obs = fx.extract(r, st, m)
        a, p = decide(r, st, m, obs)
        cluster.submit(r, Action(a))
        rows.append({"id": r.id, "obs": obs.copy(), "action": a, "propensity": p})
    for c in cluster.drain():
        done[c.request_id] = c
    return rows, done


def reward(c: Any, latency_weight: float) -> float:
    return -float(c.cost) - latency_weight * float(c.e2e)


def repetition(policy: Path, rate: float, n: int, seed: int, eps: float, latency_weight: float,
               work: Path) -> dict[str, Any]:
    """Log the incumbent with its floor, estimate the candidate, run the candidate on-policy."""
    from rlroute.cluster.base import action_mask
    from rlroute.eval.ope import RewardSpec, evaluate
    from rlroute.policies.base import DecisionContext
    from rlroute.policies.heuristic import SeedHeuristic
    from rlroute.policies.onnx import OnnxPolicy

    inc, cand = SeedHeuristic(), OnnxPolicy(str(policy), ood=False)
    floor = EpsilonFloor(inc, eps, np.random.default_rng(seed))
    agree = []

    def logging(r: Request, st: Any, m: Any, obs: np.ndarray) -> tuple[int, float]:
        a, p, base = floor.draw(DecisionContext(r, st, m, obs, action_mask(st).copy()))
        agree.append(base == int(np.argmax(cand.logits(obs))))
        return a, p

    rows, done = run(_requests(rate, n, seed), logging)
    log = work / f"log-{rate}-{seed}.jsonl"
    write_records(log, (sim_record(row["id"], row["obs"], row["action"], row["propensity"], done[row["id"]], True)
                        for row in rows))
    spec = RewardSpec(cost_weight=1.0, latency_weight=latency_weight, slo_penalty=0.0, quality_weight=0.0)
    est = evaluate(log, policy, spec, n_boot=500, seed=seed)["estimates"]
    log.unlink()
    v_log = float(np.mean([reward(done[row["id"]], latency_weight) for row in rows]))
    on_rows, on_done = run(_requests(rate, n, seed), lambda r, st, m, obs: (int(np.argmax(cand.logits(obs))), 1.0))
    v_cand = float(np.mean([reward(on_done[row["id"]], latency_weight) for row in on_rows]))
    return {"seed": seed, "v_logged": v_log, "v_cand_on_policy": v_cand, "disagreement": 1.0 - float(np.mean(agree)),
            **{k: est[k] for k in ("ips", "snips", "dr")}}


def summarise(reps: list[dict[str, Any]]) -> dict[str, Any]:
    true = np.array([r["v_cand_on_policy"] - r["v_logged"] for r in reps])
    out: dict[str, Any] = {"true_difference": float(true.mean()), "disagreement": float(np.mean([r["disagreement"] for r in reps]))}
    for k in ("ips", "snips", "dr"):
        est = np.array([r[k]["value"] - r["v_logged"] for r in reps])
        out[k] = {"relative_error": float(abs(est.mean() - true.mean()) / abs(true.mean())),
                  "estimated_difference": float(est.mean()),
                  "coverage": float(np.mean([r[k]["lo"] <= r["v_cand_on_policy"] <= r[k]["hi"] for r in reps]))}
    return out


def main(argv: list[str]) -> dict[str, Any]:
    """Entry point of ``rlroute bench ope``."""
    from rlroute.bench.parity import DEFAULT_POLICY

    ap = argparse.ArgumentParser(prog="rlroute bench ope", description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="candidate exported folder")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=3.0, help="req/s below the knee of 1 large + 2 small")
    ap.add_argument("--peak-rate", type=float, default=20.0, help="req/s at peak (0: skip)")
    ap.add_argument("--epsilon", type=float, default=0.2)
    ap.add_argument("--latency-weight", type=float, default=0.001, help="reward per second of e2e")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    t0 = time.time()
    loads = {"below_knee": a.rate, **({"peak": a.peak_rate} if a.peak_rate > 0 else {})}
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rlroute-ope-") as tmp:
        for name, rate in loads.items():
            reps = [repetition(a.policy, rate, a.requests, s, a.epsilon, a.latency_weight, Path(tmp))
                    for s in range(a.reps)]
            res[name] = {"rate": rate, **summarise(reps), "repetitions": reps}
    low = res["below_knee"]
    return emit("ope", {"value": low["dr"]["relative_error"], "unit": "dr_relative_error_of_difference",
                        "ips": low["ips"]["relative_error"], "snips": low["snips"]["relative_error"],
                        "coverage": {k: low[k]["coverage"] for k in ("ips", "snips", "dr")},
                        "disagreement": low["disagreement"], "target": {"dr_relative_error": 0.25, "coverage": 0.9},
                        "passed": low["dr"]["relative_error"] <= 0.25 and low["dr"]["coverage"] >= 0.9,
                        "loads": res, "args": {k: str(v) for k, v in vars(a).items()}, "wall_s": time.time() - t0},
                a.out)
