"""``rlroute bench fork``: time to fork the simulator mid-episode, and decisions/s of the fork references.

Scenario: the default config (``conf/config.yaml``: default cluster of 2 large + 8 small instances,
synthetic conversation workload, latent quality) or Hydra ``--overrides``; the env is driven by the seed
heuristic for ``--warmup`` decisions (so queues, batches and caches are at the episode's working load), then
at each of the next ``--n`` decisions the cluster is forked (:func:`rlroute.cluster.sim.fork.fork`) before
the env steps. ``value`` = median CPU µs per fork (CPU time: the machine is shared); ``snapshot_*`` / ``restore_*`` split
it (a what-if reference snapshots once per decision and restores once per action).

With ``--policies`` (e.g. ``reward_oracle lookahead``), each is run from a fresh episode of the same seed
for ``--window`` decisions and its decisions per CPU-second reported (``policies.<name>``), including
the env's own step and feature extraction.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from rlroute.bench import emit
from rlroute.cluster.sim.fork import Snapshot, fork
from rlroute.policies.registry import make_policy


def _env(overrides: list[str]) -> Any:
    from rlroute.env import build_env
    from rlroute.env.build import default_config

    cfg = default_config(overrides)
    return build_env(cfg, split="test"), cfg


def fork_times(env: Any, seed: int, warmup: int, n: int) -> dict[str, Any]:
    """Drive ``env`` with the heuristic, then fork at ``n`` decisions; CPU µs per fork and sizes."""
    heuristic = make_policy("heuristic")
    env.reset(seed=seed)
    heuristic.reset(np.random.default_rng(seed))
    for _ in range(warmup):
        env.step(int(heuristic.act(env.decision_context())))
    times, snaps, restores, in_flight, size = [], [], [], [], []
    for _ in range(n):
        c0 = time.process_time()
        fork(env.cluster)
        c1 = time.process_time()
        snap = Snapshot(env.cluster)
        c2 = time.process_time()
        snap.restore()
        c3 = time.process_time()
        times.append(c1 - c0)
        snaps.append(c2 - c1)
        restores.append(c3 - c2)
        size.append(len(snap.data))
        in_flight.append(env.cluster.in_flight)
        env.step(int(heuristic.act(env.decision_context())))
    us = np.array(times) * 1e6
    return {
        "value": round(float(np.median(us)), 1),
        "p90_us": round(float(np.quantile(us, 0.9)), 1),
        "mean_us": round(float(us.mean()), 1),
        "snapshot_median_us": round(float(np.median(snaps)) * 1e6, 1),
        "restore_median_us": round(float(np.median(restores)) * 1e6, 1),
        "snapshot_bytes_median": int(np.median(size)),
        "in_flight_mean": round(float(np.mean(in_flight)), 1),
        "sim_time_s": round(float(env.cluster.now), 1),
    }


def policy_rate(env: Any, name: str, seed: int, window: int) -> dict[str, Any]:
    """Decisions per CPU-second of policy ``name`` over ``window`` decisions of one episode."""
    pol = make_policy(name)
    env.reset(seed=seed)
    pol.reset(np.random.default_rng(seed))
    pol.bind_env(env)
    c0, t0 = time.process_time(), time.perf_counter()
    done, k = False, 0
    while not done and k < window:
        _, _, term, trunc, _ = env.step(int(pol.act(env.decision_context())))
        done, k = bool(term or trunc), k + 1
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"decisions": k, "decisions_per_s": round(k / cpu, 1), "wall_decisions_per_s": round(k / wall, 1)}


def main(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and emit its JSON."""
    ap = argparse.ArgumentParser(prog="rlroute bench fork", description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=384, help="heuristic decisions before timing forks")
    ap.add_argument("--n", type=int, default=100, help="forks timed (one per decision)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", nargs="*", default=[], help="fork references to time, e.g. reward_oracle")
    ap.add_argument("--window", type=int, default=256, help="decisions per policy timing run")
    ap.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides (workload=..., cluster=...)")
    ap.add_argument("--out", default=None, help="JSON path (default bench-results/fork.json)")
    args = ap.parse_args(argv)
    env, cfg = _env(list(args.overrides))
    result: dict[str, Any] = {
        **fork_times(env, args.seed, args.warmup, args.n),
        "unit": "us/fork (median, CPU)",
        "episode_length": int(cfg.episode_length),
        "warmup": args.warmup,
        "forks": args.n,
        "overrides": list(args.overrides),
        "seed": args.seed,
    }
    if args.policies:
        result["policies"] = {p: policy_rate(env, p, args.seed, args.window) for p in args.policies}
    env.close()
    return emit("fork", result, args.out)
