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
estimated difference − mean of the on-policy difference| / |mean on-policy difference| (with the mean error's
95 % interval over repetitions), and per repetition whether the 95 % interval of the estimated difference covers
the on-policy difference (``coverage``; the interval of ``V_cand`` alone: ``coverage_v_cand``). At a load well
below the pools' knee requests barely interfere; at peak a different action changes the queues later requests
meet, which the estimators assume away: that bias is reported at ``--peak-rate``. The prefix caches interfere
at any load (a request's cached tokens, billed cheaper, depend on where earlier turns went).

``dr_twin`` (:mod:`rlroute.eval.ope_twin`, ``--twin-reps`` replicates, 0: off) is DR with a simulator twin as
its reward model; the twin knows what a deployer knows — the log (requests, logged actions and observations,
latencies: its step times are fitted on the logged TTFT/TPOT) and the deployment's config (pools, instances,
model x GPU memory and limits, cache, prices) — not the truth's latency profiles. ``--twin-oracle`` adds
``dr_twin_oracle``, a twin with the truth's own profiles: a perfectly specified latency model, an upper bound
only. The JSON's ``value`` stays plain DR's relative error; ``dr_twin`` (and ``dr_twin_oracle``) sit beside it.

Reward variants, each estimated and measured from the same runs: ``cost_latency`` = ``-cost - latency_weight *
e2e_s`` (the judged one) and ``cost_only`` = ``-cost`` (no queueing interference; quality is not in a decision
log in either).

Usage::

    rlroute bench ope [--policy FOLDER] [--reps 20] [--requests 600] [--rate 2] [--also-rates 1] [--peak-rate 20]
                      [--epsilon 0.2] [--latency-weight 0.001] [--split test] [--seed0 0] [--twin-reps 16]
                      [--twin-oracle] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.bench import emit
from rlroute.eval.ope_twin import TwinSpec, drive, sim_pools, twin_runs
from rlroute.offline.behaviour import EpsilonFloor, sim_record, write_records
from rlroute.types import Request

LARGE, SMALL = "qwen3-235b-a22b-fp8__h100x8", "qwen3-4b__h100"


POOLS = {"large": (LARGE, 1), "small": (SMALL, 2)}


def _cluster() -> Any:
    from rlroute.cluster.sim import SimCluster

    return SimCluster(pools=sim_pools(POOLS), seed=0)


def _requests(rate: float, n: int, seed: int, split: str) -> list[Request]:
    from rlroute.bench.replay import load_requests

    return load_requests(["workload=synthetic", f"workload.rate={rate}"], split, n, seed)


def run(reqs: list[Request], decide: Any) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """One pass through a fresh cluster; ``decide(req, state, matches, obs) -> (action, propensity)``."""
    rows: list[dict[str, Any]] = []

    def act(r: Request, st: Any, m: Any, obs: np.ndarray) -> int:
        a, p = decide(r, st, m, obs)
        rows.append({"id": r.id, "obs": obs.copy(), "action": a, "propensity": p})
        return int(a)

    return rows, drive(_cluster(), reqs, act)


def reward(c: Any, latency_weight: float) -> float:
    return -float(c.cost) - latency_weight * float(c.e2e)


def repetition(policy: Path, rate: float, n: int, seed: int, eps: float, latency_weights: dict[str, float],
               split: str, work: Path, twin_reps: int = 0, oracle: bool = False) -> dict[str, Any]:
    """Log the incumbent with its floor, estimate the candidate, run the candidate on-policy; the estimates and
    the truths for each reward variant (``latency_weights``: name -> weight per e2e second) from the same runs.
    ``twin_reps`` > 0: also ``dr_twin`` (the twin's latencies fitted on the log, the pools from the config);
    ``oracle``: also ``dr_twin_oracle`` (the truth's own profiles: an upper bound, not a deployer's estimate)."""
    from rlroute.cluster.base import action_mask
    from rlroute.eval.ope import RewardSpec, evaluate, load
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

    reqs = _requests(rate, n, seed, split)
    rows, done = run(reqs, logging)
    on_rows, on_done = run(reqs, lambda r, st, m, obs: (int(np.argmax(cand.logits(obs))), 1.0))
    log = work / f"log-{rate}-{seed}.jsonl"
    by_id = {r.id: r for r in reqs}
    write_records(log, (sim_record(row["id"], row["obs"], row["action"], row["propensity"], done[row["id"]], True,
                                   request=by_id[row["id"]]) for row in rows))
    out: dict[str, Any] = {"seed": seed, "disagreement": 1.0 - float(np.mean(agree)),
                           "large_share": {"logged": float(np.mean([r["action"] == 0 for r in rows])),
                                           "candidate": float(np.mean([r["action"] == 0 for r in on_rows]))}}
    spec0 = RewardSpec(quality_weight=0.0)
    lg = load(log, spec0)
    obs_by_id = dict(zip(lg.ids, lg.obs, strict=True))
    pools = [f"{p}={prof}:{k}" for p, (prof, k) in POOLS.items()]
    runs = {}
    if twin_reps > 0:
        runs["dr_twin"] = twin_runs(log, policy, obs_by_id, TwinSpec.parse(pools, twin_reps), seed)
        out["twin_fit"] = runs["dr_twin"].fits[0]
        out["large_share"]["twin_candidate"] = runs["dr_twin"].candidate_large_share
    if oracle:
        runs["dr_twin_oracle"] = twin_runs(log, policy, obs_by_id, TwinSpec.parse(pools, 2, oracle=True), seed)
    for name, lw in latency_weights.items():
        spec = RewardSpec(cost_weight=1.0, latency_weight=lw, slo_penalty=0.0, quality_weight=0.0)
        est = evaluate(log, policy, spec, n_boot=500, seed=seed, runs=runs)["estimates"]
        out[name] = {"v_logged": float(np.mean([reward(done[row["id"]], lw) for row in rows])),
                     "v_cand_on_policy": float(np.mean([reward(on_done[row["id"]], lw) for row in on_rows])),
                     **{k: est[k] for k in ("ips", "snips", "dr", *runs)}}
    log.unlink()
    return out


def summarise(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per estimator over the repetitions of one reward variant: the relative error of the mean estimated
    difference, the mean error with a 95 % normal interval over repetitions, and the coverage of the
    difference's interval (the quantity judged) and of ``V_cand``'s."""
    true = np.array([r["v_cand_on_policy"] - r["v_logged"] for r in reps])
    out: dict[str, Any] = {"true_difference": float(true.mean()),
                           "true_difference_sd": float(true.std(ddof=1)) if len(true) > 1 else 0.0}
    for k in ("ips", "snips", "dr", *(k for k in reps[0] if k.startswith("dr_twin"))):
        est = np.array([r[k]["value"] - r["v_logged"] for r in reps])
        err = est - true
        se = float(err.std(ddof=1) / np.sqrt(len(err))) if len(err) > 1 else float("nan")
        out[k] = {"relative_error": float(abs(est.mean() - true.mean()) / abs(true.mean())),
                  "estimated_difference": float(est.mean()), "mean_error": float(err.mean()),
                  "mean_error_ci95": [float(err.mean() - 1.96 * se), float(err.mean() + 1.96 * se)],
                  "coverage": float(np.mean([r[k]["diff_lo"] <= t <= r[k]["diff_hi"] for r, t in zip(reps, true, strict=True)])),
                  "coverage_v_cand": float(np.mean([r[k]["lo"] <= r["v_cand_on_policy"] <= r[k]["hi"] for r in reps])),
                  "interval_width": float(np.mean([r[k]["diff_hi"] - r[k]["diff_lo"] for r in reps]))}
    return out


def main(argv: list[str]) -> dict[str, Any]:
    """Entry point of ``rlroute bench ope``."""
    from rlroute.bench.parity import DEFAULT_POLICY

    ap = argparse.ArgumentParser(prog="rlroute bench ope", description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="candidate exported folder")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--rate", type=float, default=2.0, help="req/s below the knee (0.5 x the measured 4 req/s)")
    ap.add_argument("--also-rates", type=float, nargs="*", default=[1.0], help="further req/s, reported, not judged")
    ap.add_argument("--peak-rate", type=float, default=20.0, help="req/s at peak (0: skip)")
    ap.add_argument("--epsilon", type=float, default=0.2)
    ap.add_argument("--latency-weight", type=float, default=0.001, help="reward per second of e2e")
    ap.add_argument("--split", default="test", help="workload split (tune on val, report on test)")
    ap.add_argument("--seed0", type=int, default=0, help="first repetition's seed")
    ap.add_argument("--twin-reps", type=int, default=16,
                    help="dr_twin's twin replicates (latencies fitted on each log; 0: no dr_twin)")
    ap.add_argument("--twin-oracle", action="store_true",
                    help="also dr_twin_oracle: a twin with the truth's own profiles (an upper bound only)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.reps < 2 or a.requests < 50 or a.twin_reps == 1 or a.twin_reps < 0:
        ap.error("--reps must be >= 2, --requests >= 50 and --twin-reps 0 or >= 2")
    t0 = time.time()
    loads = {"below_knee": a.rate, **{f"{r:g}_req_s": r for r in a.also_rates},
             **({"peak": a.peak_rate} if a.peak_rate > 0 else {})}
    variants = {"cost_latency": a.latency_weight, "cost_only": 0.0}
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rlroute-ope-") as tmp:
        for name, rate in loads.items():
            reps = [repetition(a.policy, rate, a.requests, s, a.epsilon, variants, a.split, Path(tmp), a.twin_reps,
                               a.twin_oracle) for s in range(a.seed0, a.seed0 + a.reps)]
            res[name] = {"rate": rate, "disagreement": float(np.mean([r["disagreement"] for r in reps])),
                         **{v: summarise([r[v] for r in reps]) for v in variants}, "repetitions": reps}
    low = res["below_knee"]["cost_latency"]
    return emit("ope", {"value": low["dr"]["relative_error"], "unit": "dr_relative_error_of_difference",
                        "ips": low["ips"]["relative_error"], "snips": low["snips"]["relative_error"],
                        "coverage": {k: low[k]["coverage"] for k in ("ips", "snips", "dr")},
                        "disagreement": res["below_knee"]["disagreement"],
                        "target": {"dr_relative_error": 0.25, "coverage": 0.9},
                        "passed": low["dr"]["relative_error"] <= 0.25 and low["dr"]["coverage"] >= 0.9,
                        **{k: {"relative_error": low[k]["relative_error"], "coverage": low[k]["coverage"],
                               "passed": low[k]["relative_error"] <= 0.25 and low[k]["coverage"] >= 0.9}
                           for k in low if k.startswith("dr_twin")},
                        "loads": res, "args": {k: str(v) for k, v in vars(a).items()}, "wall_s": time.time() - t0},
                a.out)
