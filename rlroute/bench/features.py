"""``rlroute bench features``: feature extraction time per routing decision for a 2k-token prompt.

Two figures, in CPU time (``time.process_time``: the machine is shared, so wall time also counts other
processes; the wall-clock median is reported beside it), median over repeats of a timed loop:

* **cold**: the request block of a fresh request (text hashing of 2048 token ids, cues, complexity) --
  paid once per request;
* **warm** (headline ``value``): ``extract`` once the request block is cached in ``request.cache`` --
  the system and cache blocks, paid at every decision; the target is <= 20 us on top of the simulator.

The cluster state is the default topology (2 large + 8 small instances) with load on every instance,
built by hand so the figure isolates feature extraction from the simulator; with ``--sim`` the state
and prefix matches come from a real ``SimCluster`` after routing a few hundred requests (if the
simulator is importable), and the simulator's own ``cluster.state()`` refresh is timed for context.
Each run records its arguments in the JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rlroute.bench import emit
from rlroute.cluster.base import ClusterState, InstanceState, PoolState
from rlroute.features import SCHEMA, FeatureExtractor
from rlroute.types import Request


def _state(rng: np.random.Generator, n_large: int, n_small: int) -> ClusterState:
    def pool(name: str, n: int) -> PoolState:
        insts = [
            InstanceState(
                index=i,
                queued=int(rng.integers(0, 20)),
                running=int(rng.integers(1, 64)),
                kv_used_tokens=int(rng.integers(10_000, 500_000)),
                kv_capacity_tokens=600_000,
                cache_tokens=int(rng.integers(5_000, 400_000)),
                recent_ttft=float(rng.uniform(0.05, 3)),
                recent_tpot=float(rng.uniform(0.01, 0.08)),
                recent_e2e=float(rng.uniform(1, 30)),
                throughput=float(rng.uniform(100, 3000)),
                cache_hit_rate=float(rng.uniform(0, 1)),
                evictions_rate=float(rng.uniform(0, 5000)),
            )
            for i in range(n)
        ]
        return PoolState(name=name, instances=insts, recent_ttft=0.5, recent_tpot=0.03, recent_e2e=8.0,
                         throughput=5000.0, cache_hit_rate=0.4, slo_violation_rate=0.1, cost_rate=0.02,
                         last_weight_update=100.0)  # fmt: skip

    return ClusterState(time=3600.0, pools={"large": pool("large", n_large), "small": pool("small", n_small)},
                        arrival_rate=12.0)  # fmt: skip


def _request(rng: np.random.Generator, i: int, tokens: int) -> Request:
    ids = tuple(int(x) for x in rng.integers(1000, 30_000, tokens))
    words = " ".join(f"w{x}" for x in ids[: tokens * 3 // 4])
    prompt = f"Explain step by step why {words}? Then write code: def f(x): return x + 1"
    return Request(id=i, arrival=0.0, input_len=tokens, output_len=256, prompt=prompt, token_ids=ids,
                   blocks=tuple(range(tokens // 64)), block_size=64)  # fmt: skip


def _time(fn: Callable[[], Any], n: int, repeats: int, clock: Callable[[], float]) -> list[float]:
    """Per-call microseconds of ``fn`` on ``clock``, one figure per repeat of ``n`` calls."""
    out = []
    for _ in range(repeats):
        t = clock()
        for _ in range(n):
            fn()
        out.append((clock() - t) / n * 1e6)
    return out


def _sim_context(
    tokens: int, rng: np.random.Generator
) -> tuple[ClusterState, dict[str, list[int]], Request, Callable[[], Any]]:
    from hydra import compose, initialize_config_dir

    from rlroute.cluster.sim import build_cluster
    from rlroute.paths import CONF_DIR
    from rlroute.types import Action

    with initialize_config_dir(config_dir=str(CONF_DIR / "cluster"), version_base="1.3"):
        cfg = compose(config_name="default")
    cluster = build_cluster(cfg, rng)
    t = 0.0
    for i in range(400):
        t += float(rng.exponential(0.1))
        r = _request(rng, i, int(rng.integers(256, tokens)))
        cluster.advance(t)
        cluster.submit(r, Action(int(rng.integers(0, 3))))
    req = _request(rng, 10_000, tokens)
    return cluster.state(), cluster.prefix_match(req), req, cluster.state


def main(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and emit its JSON."""
    ap = argparse.ArgumentParser(prog="rlroute bench features", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--tokens", type=int, default=2048, help="prompt length in tokens (default 2048)")
    ap.add_argument("--n", type=int, default=2000, help="calls per timed repeat (warm)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--large", type=int, default=2, help="large instances (hand-built state)")
    ap.add_argument("--small", type=int, default=8, help="small instances (hand-built state)")
    ap.add_argument("--sim", action="store_true", help="take state and matches from a loaded SimCluster")
    ap.add_argument("--text", default="hash", help="text representation (hash | minilm)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default bench-results/features.json)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    cpu = time.process_time  # CPU time: robust to other processes on a shared machine
    ex = FeatureExtractor(args.text)
    sim_state_us = None
    if args.sim:
        st, matches, req, refresh = _sim_context(args.tokens, rng)
        sim_state_us = round(statistics.median(_time(refresh, args.n // 4 or 1, args.repeats, cpu)), 2)
    else:
        st = _state(rng, args.large, args.small)
        req = _request(rng, 0, args.tokens)
        matches = {
            p: [int(x) for x in rng.integers(0, args.tokens, len(ps.instances))] for p, ps in st.pools.items()
        }
    n_cold = max(20, args.n // 50)
    fresh = [_request(rng, i + 1, args.tokens) for i in range(n_cold)]
    it = iter(fresh * args.repeats)
    cold = _time(lambda: ex.request_block(next(it)), n_cold, 1, cpu)  # one pass: each request is fresh once
    ex.extract(req, st, matches)  # fill the request cache
    warm = _time(lambda: ex.extract(req, st, matches), args.n, args.repeats, cpu)
    warm_wall = _time(lambda: ex.extract(req, st, matches), args.n, args.repeats, time.perf_counter)
    obs = ex.extract(req, st, matches)
    result = {
        "value": round(statistics.median(warm), 2),
        "unit": "us CPU time per decision (warm: request block cached)",
        "warm_us_median": round(statistics.median(warm), 2),
        "warm_us_min": round(min(warm), 2),
        "warm_wall_us_median": round(statistics.median(warm_wall), 2),
        "cold_request_block_us": round(cold[0], 1),
        "target_us": 20.0,
        "prompt_tokens": args.tokens,
        "instances": {p: len(ps.instances) for p, ps in st.pools.items()},
        "state_source": "SimCluster" if args.sim else "hand-built",
        "sim_state_refresh_us": sim_state_us,  # the simulator's own cluster.state() (context, --sim only)
        "text": args.text,
        "schema": {"version": SCHEMA.version, "hash": ex.schema.hash, "size": len(ex.schema)},
        "obs_in_bounds": bool(((obs >= ex.schema.low) & (obs <= ex.schema.high)).all()),
        "args": vars(args),
    }
    return emit("features", result, args.out)
