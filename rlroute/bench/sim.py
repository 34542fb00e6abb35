"""``rlroute bench sim``: simulated routing decisions per second on one core.

Scenario: the default cluster (``conf/cluster/default.yaml``; its pool sizes are in the JSON), the Mooncake
conversation trace (12,031 requests, ``conf/workload/mooncake.yaml``) when ``../shared/data`` is there,
else a synthetic conversation workload of the same size (``rlroute.cluster.sim.synthetic``), and a
uniformly random choice among large / small / hybrid per request. One decision = advance to the
arrival + submit; the final drain is included. Requests are materialised before timing (workload
parsing is not the simulator's cost).

Reported: ``value`` = decisions per CPU-second of this process for that loop (best of ``--repeats``;
CPU time, because the 2-core machine is shared and wall time then measures the neighbours too);
``wall_decisions_per_s`` is the same by wall clock. ``with_state_*`` also calls ``state()`` and
``prefix_match()`` per decision, as the RL env does. ``profile`` is a cProfile breakdown (internal
time per function) of one with-state run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rlroute.bench import emit
from rlroute.cluster.sim.cluster import SimCluster
from rlroute.cluster.sim.synthetic import conversation_requests
from rlroute.paths import CONF_DIR
from rlroute.types import Request

MOONCAKE_REQUESTS = 12031
MOONCAKE_RATE = 12031 / 3537.0  # the trace's mean request rate


def load_requests(seed: int) -> tuple[list[Request], str]:
    """The Mooncake conversation trace via the workload layer, else the synthetic fallback."""
    from rlroute.datasets.store import resolve

    path = resolve("mooncake/conversation_trace.jsonl")
    if path.is_file():
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose("config", overrides=["workload=mooncake", "~quality"])
        wl = instantiate(cfg.workload)
        return list(wl.requests(np.random.default_rng(seed))), f"mooncake conversation trace ({path})"
    reqs = conversation_requests(MOONCAKE_REQUESTS, MOONCAKE_RATE, np.random.default_rng(seed))
    return reqs, "synthetic conversations (../shared/data absent), Mooncake-sized"


def build(seed: int) -> SimCluster:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=["cluster=default", "~quality"])
    cluster: SimCluster = instantiate(cfg.cluster, rng=np.random.default_rng(seed))
    return cluster


def loop(cluster: SimCluster, reqs: list[Request], actions: list[int], with_state: bool) -> tuple[float, float]:
    """Run the decision loop; return (CPU seconds of this process, wall seconds)."""
    advance, submit = cluster.advance, cluster.submit
    c0, t0 = time.process_time(), time.perf_counter()
    if with_state:
        state, match = cluster.state, cluster.prefix_match
        for req, a in zip(reqs, actions, strict=True):
            advance(req.arrival)
            state()
            match(req)
            submit(req, a)
    else:
        for req, a in zip(reqs, actions, strict=True):
            advance(req.arrival)
            submit(req, a)
    cluster.drain()
    return time.process_time() - c0, time.perf_counter() - t0


def profile_top(reqs: list[Request], actions: list[int], seed: int, n: int = 15) -> dict[str, Any]:
    """cProfile one run (with state/match, as the env runs it): internal time by module and the top
    functions."""
    prof = cProfile.Profile()
    cluster = build(seed)
    prof.enable()
    loop(cluster, reqs, actions, with_state=True)
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    by_module: dict[str, float] = {}
    for k, v in rows:
        mod = Path(k[0]).name if k[0].endswith(".py") and "rlroute" in k[0] else "builtins/other"
        by_module[mod] = by_module.get(mod, 0.0) + v[2]
    return {
        "total_s": round(total, 3),
        "by_module": {m: round(t / total, 3) for m, t in sorted(by_module.items(), key=lambda kv: -kv[1])},
        "top_functions": [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1],
                           "tottime_s": round(v[2], 4), "share": round(v[2] / total, 3)} for k, v in rows[:n]],
    }


def main(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and emit its JSON."""
    ap = argparse.ArgumentParser(prog="rlroute bench sim", description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdown")
    ap.add_argument("--out", default=None, help="JSON path (default bench-results/sim.json)")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):  # one core, as the target is stated
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    reqs, source = load_requests(args.seed)
    actions = np.random.default_rng(args.seed).integers(0, 3, len(reqs)).tolist()
    plain = [loop(build(args.seed), reqs, actions, False) for _ in range(args.repeats)]
    full = [loop(build(args.seed), reqs, actions, True) for _ in range(args.repeats)]
    n = len(reqs)
    built = build(args.seed)
    result: dict[str, Any] = {
        "value": round(n / min(c for c, _ in plain), 1),
        "unit": "decisions/s",
        "target": 20000,
        "wall_decisions_per_s": round(n / min(w for _, w in plain), 1),
        "with_state_decisions_per_s": round(n / min(c for c, _ in full), 1),
        "with_state_wall_decisions_per_s": round(n / min(w for _, w in full), 1),
        "requests": len(reqs),
        "workload": source,
        "cluster": "conf/cluster/default.yaml ("
        + " + ".join(f"{len(p.instances)} {n}" for n, p in built.pools.items()) + ")",
        "profiles": {n: f"{p.profile.name} ({p.profile.status})" for n, p in built.pools.items()},
        "policy": "uniform random over large/small/hybrid",
        "repeats": args.repeats,
        "seed": args.seed,
    }
    if not args.no_profile:
        result["profile"] = profile_top(reqs, actions, args.seed)
    return emit("sim", result, args.out)
