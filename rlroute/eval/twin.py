"""The replay twin's check: a decision log's requests and logged actions re-run in the simulator, and the
simulated latencies set against the logged ones (``experiments/replay_twin``).

The log's arrivals are the router's (modelled seconds), the logged latencies the workers' own, counted from
each stage's arrival at its worker (:mod:`rlroute.serve.decisionlog`); the simulator runs the same requests
at the logged arrivals with the logged actions. The difference is therefore the sim-vs-live gap of the
instance model plus the router-to-worker lag, which ``experiments/vs_sglang_router`` measured as the
"workers' arrival times" row of its gap table.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.cluster.sim.cluster import SimCluster
from rlroute.cluster.sim.run import run
from rlroute.workload.replay import ReplayWorkload


def replay_logged(path: str, cluster: SimCluster, split: str = "all") -> list[dict[str, Any]]:
    """Per logged request with an answer: its row, action, and logged and simulated TTFT / e2e (seconds)."""
    wl = ReplayWorkload(path, split)
    log = wl.log
    reqs = list(wl.requests(np.random.default_rng(0)))
    done = {c.request_id: c for c in run(cluster, reqs, lambda r: log.actions[r.id], drain=True)}
    rows = []
    for r in reqs:
        got, c = log.logged[r.id], done.get(r.id)
        if got["ttft_s"] is None or c is None or c.failed:
            continue
        rows.append({"row": r.id, "action": log.actions[r.id], "logged_ttft": got["ttft_s"], "sim_ttft": c.ttft,
                     "logged_e2e": got["e2e_s"], "sim_e2e": c.e2e})
    return rows


def gap(rows: list[dict[str, Any]], quantiles: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """``logged / simulated - 1`` of the mean and of each quantile of TTFT and e2e, and the per-request
    median ratio; ``n`` requests compared."""
    out: dict[str, float] = {"n": float(len(rows))}
    for m in ("ttft", "e2e"):
        lg = np.array([r[f"logged_{m}"] for r in rows], dtype=float)
        sm = np.array([r[f"sim_{m}"] for r in rows], dtype=float)
        out[f"mean_{m}"] = float(lg.mean() / sm.mean() - 1.0)
        for q in quantiles:
            out[f"p{q:g}_{m}"] = float(np.percentile(lg, q) / np.percentile(sm, q) - 1.0)
        out[f"median_ratio_{m}"] = float(np.median(lg / np.maximum(sm, 1e-9)) - 1.0)
    return out


LARGE, SMALL = "qwen3-235b-a22b-fp8__h100x8", "qwen3-4b__h100"  # as tests/fleet.py


def fleet_pools(large: int, small: int) -> dict[str, Any]:
    """The simulator's pools as the emulated fleet runs them (worker defaults: mem auto, LRU, cache_aware)."""
    return {p: {"profile": prof, "instances": n, "in_pool": {"_target_": "rlroute.cluster.inpool.CacheAware"},
                "cache": {"mem_fraction_static": "auto", "eviction": "lru"}}
            for p, prof, n in (("large", LARGE, large), ("small", SMALL, small))}


def serve_and_log(log: Path, n: int, rate: float, speedup: float, seed: int, large: int, small: int,
                  work: Path) -> dict[str, Any]:
    """Start the fleet and the router (decision log on), send ``n`` synthetic requests at their arrival times
    (wall = modelled / speedup), stop the router (which flushes the log); the client-side summary."""
    from rlroute.bench.replay import load_requests, replay, summarise
    from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
    from rlroute.serve.launch import RouterProc

    specs = [WorkerSpec("large", LARGE, speedup)] * large + [WorkerSpec("small", SMALL, speedup)] * small
    fleet = WorkerFleet(specs, work / "workers").start()
    try:
        router = RouterProc(fleet.urls("large"), fleet.urls("small"), work / "router.log",
                            [f"speedup={speedup}", f"decision_file.path={log}", "scrape_interval_s=0.2",
                             "health_interval_s=0.2"])
        try:
            reqs = load_requests(["workload=synthetic", f"workload.rate={rate}"], "test", n, seed)
            recs = asyncio.run(replay(router.url, reqs, 1.0 / speedup, caps=True))
        finally:
            router.stop()
    finally:
        fleet.stop()
    return summarise(recs)
