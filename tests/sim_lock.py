"""Behaviour lock of the simulator: bit-exact digests of what it computes on fixed cases.

Every case runs a :class:`~rlroute.cluster.sim.SimCluster` on a fixed workload with fixed actions and hashes
(SHA-256) every :class:`~rlroute.types.Completion` in emission order — action, pools, instances, queue time,
TTFT, TPOT, e2e, finish time, tokens, cached tokens, cost, retries, failure reason — with floats hashed by
their IEEE-754 bytes, so a change in floating-point evaluation order changes the digest. Cases that call
``state()`` and ``prefix_match()`` before each submit (as the RL env does) also hash every field of the
returned state and matches at every decision. A few end-of-run counters (evictions, retractions, router
trims, autoscaler GPU-seconds) are hashed too and kept readable beside the digest.

The reference file ``tests/sim_lock.json`` holds the digests the code computed when they were recorded;
``tests/test_sim_lock.py`` recomputes them. A performance change must leave them bit-identical.

Regenerate (``PYTHONPATH=. python tests/sim_lock.py --write``) only for an *intended* change of what the
simulator computes (a fidelity fix, a new semantics, a changed default config or profile), in the same
commit as that change, and say so in its message; never to make an optimisation pass. ``--check`` prints
the cases that differ. The Mooncake cases need ``../shared/data`` and are skipped without it (their
reference stays in the file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.cluster.sim.build import build_cluster
from rlroute.cluster.sim.cluster import SimCluster
from rlroute.cluster.sim.synthetic import conversation_requests
from rlroute.types import Completion, QualityDraw, Request

REFERENCE = Path(__file__).with_name("sim_lock.json")
BENCH_RATE = 12031 / 3537.0  # the Mooncake trace's mean rate (rlroute.bench.sim.MOONCAKE_RATE)

_INST_F = ("kv_used_tokens", "kv_capacity_tokens", "cache_tokens", "queued", "running")
_INST_X = ("recent_ttft", "recent_tpot", "recent_e2e", "throughput", "cache_hit_rate", "evictions_rate", "cost")
_POOL_X = ("recent_ttft", "recent_tpot", "recent_e2e", "throughput", "cache_hit_rate", "slo_violation_rate",
           "cost_rate", "cost", "recent_output_tokens")


class Digest:
    """SHA-256 over ints, floats (their bytes) and strings."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def ints(self, xs: Iterable[int]) -> None:
        self.h.update(array("q", xs).tobytes())

    def floats(self, xs: Iterable[float]) -> None:
        self.h.update(array("d", xs).tobytes())

    def text(self, s: str) -> None:
        self.h.update(s.encode())
        self.h.update(b"\0")

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def completion(d: Digest, c: Completion) -> None:
    d.ints((c.request_id, int(c.action), c.prompt_tokens, c.cached_tokens, c.output_tokens, c.retries,
            int(c.failed), -1 if c.quality_ok is None else int(c.quality_ok), *c.instances))
    d.floats((c.arrival, c.finish, c.queue_time, c.ttft, c.tpot, c.e2e, c.cost))
    d.text(",".join(c.pools) + "|" + (c.fail_reason or ""))


def state(d: Digest, st: ClusterState, matches: dict[str, list[int]]) -> None:
    d.floats((st.time, st.arrival_rate, st.day_offset))
    for name, ps in st.pools.items():
        d.text(name)
        d.floats([getattr(ps, f) for f in _POOL_X] + [-1.0 if ps.last_weight_update is None
                                                      else ps.last_weight_update])
        for s in ps.instances:
            d.ints([s.index, int(s.healthy), int(s.paused)] + [getattr(s, f) for f in _INST_F])
            d.floats([getattr(s, f) for f in _INST_X])
        d.ints(matches[name])


@dataclass
class Case:
    """One locked run: a cluster config, a workload and a rule for the actions."""

    name: str
    requests: Callable[[], list[Request]]
    overrides: Sequence[str] = ()  # Hydra overrides on top of ``cluster=default``
    seed: int = 0
    with_state: bool = True
    actions: str = "random"  # random | large_heavy | hybrid
    scaler: Sequence[str] | None = None  # Hydra overrides selecting a scaler (None: none)
    events: list[dict[str, Any]] = field(default_factory=list)
    needs_data: bool = False


def synthetic(n: int, rate: float, seed: int) -> Callable[[], list[Request]]:
    return lambda: conversation_requests(n, rate, np.random.default_rng(seed))


def with_quality(make: Callable[[], list[Request]], seed: int) -> Callable[[], list[Request]]:
    """Requests with fixed quality draws (cascade escalation needs them)."""

    def f() -> list[Request]:
        reqs = make()
        rng = np.random.default_rng(seed + 1000)
        for r in reqs:
            u = rng.random(3)
            r.quality = QualityDraw(p=(0.9, 0.6, 0.75), ok=(bool(u[0] < 0.9), bool(u[1] < 0.6), bool(u[2] < 0.75)),
                                    escalated=bool(u[2] < 0.35))
        return reqs

    return f


def mooncake() -> list[Request]:
    from rlroute.bench.sim import load_requests

    return load_requests(0)[0]


def actions(kind: str, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    if kind == "random":  # the bench's rule
        out: list[int] = rng.integers(0, 3, n).tolist()
        return out
    if kind == "large_heavy":  # KV pressure on the large pool: queues and retractions
        return rng.choice(3, n, p=[0.7, 0.1, 0.2]).tolist()
    if kind == "hybrid":
        return rng.choice(3, n, p=[0.2, 0.2, 0.6]).tolist()
    raise ValueError(kind)


EVENTS = [
    {"time": 40.0, "event": "fail_instance", "pool": "small", "i": 1},
    {"time": 60.0, "event": "fail_instance", "pool": "large", "i": 0, "mode": "hang"},
    {"time": 90.0, "event": "flush_cache", "pool": "small"},
    {"time": 120.0, "event": "pause", "pool": "large"},
    {"time": 135.0, "event": "resume", "pool": "large"},
    {"time": 200.0, "event": "recover_instance", "pool": "small", "i": 1},
    {"time": 260.0, "event": "recover_instance", "pool": "large", "i": 0},
    {"time": 300.0, "event": "update_weights", "pool": "small", "load_time_s": 20.0},
    {"time": 360.0, "event": "scale", "pool": "small", "n": 10, "startup_s": 30.0},
    {"time": 480.0, "event": "scale", "pool": "small", "n": 6},
    {"time": 500.0, "event": "update_weights", "pool": "large", "load_time_s": 30.0, "flush": False},
]

TRIM = ["cluster.router_view.eviction_interval_s=20", "cluster.router_view.max_tree_tokens=150000"]

CASES: list[Case] = [
    *(Case(f"synthetic-default-s{s}", synthetic(2500, BENCH_RATE, s), seed=s) for s in (0, 1, 2)),
    Case("synthetic-default-nostate", synthetic(2500, BENCH_RATE, 3), seed=3, with_state=False),
    Case("synthetic-loaded", synthetic(2500, 12.0, 4), seed=4, actions="large_heavy"),
    Case("kv-tight", synthetic(2000, 8.0, 15), seed=15, actions="large_heavy",
         overrides=["+cluster.pools.large.cache.kv_capacity_tokens=60000",
                    "+cluster.pools.small.cache.kv_capacity_tokens=60000"]),
    Case("router-view-trim", synthetic(2500, 8.0, 5), overrides=TRIM, seed=5),
    Case("router-view-off", synthetic(2000, 6.0, 6), overrides=["cluster/router_view=off"], seed=6),
    Case("hybrid-pipelined", synthetic(2000, 6.0, 7), seed=7, actions="hybrid",
         overrides=["+cluster.hybrid={mode: pipelined, plan_tokens: 96, plan_sigma: 0.6, plan_cap: 400}"]),
    Case("hybrid-cascade", with_quality(synthetic(2000, 6.0, 8), 8), seed=8, actions="hybrid",
         overrides=["+cluster.hybrid={mode: cascade}"]),
    Case("scaler-reactive", synthetic(3000, 12.0, 9), seed=9, actions="large_heavy",
         scaler=["scaler=reactive", "scaler.interval_s=10", "scaler.pools.large.startup_s=30",
                 "scaler.pools.small.startup_s=10", "scaler.pools.small.target_load=4",
                 "scaler.pools.large.target_load=8", "scaler.cache_warmup.enabled=true"]),
    Case("scaler-predictive", synthetic(2000, 10.0, 10), seed=10,
         scaler=["scaler=predictive", "scaler.interval_s=10", "scaler.forecast.method=holt_winters",
                 "scaler.forecast.season_s=60", "scaler.forecast.refit_s=300"]),
    Case("events-health-check", synthetic(2500, 6.0, 11), seed=11, events=EVENTS),
    Case("events-instant", synthetic(2500, 6.0, 12), seed=12, events=EVENTS,
         overrides=["cluster.fault_handling.detection=instant"]),
    Case("schedulers-options", synthetic(2000, 8.0, 13), seed=13, actions="large_heavy",
         overrides=["cluster/scheduler@cluster.pools.large.scheduler=sglang_mixed",
                    "cluster/scheduler@cluster.pools.small.scheduler=sglang_lpm",
                    "cluster/in_pool@cluster.pools.small.in_pool=power_of_two",
                    "cluster/cost=gpu_seconds", "cluster/cache@cluster.pools.small.cache=lru"]),
    Case("legacy-scheduler", synthetic(2000, 8.0, 14), seed=14,
         overrides=["cluster/scheduler@cluster.pools.large.scheduler=legacy",
                    "cluster/scheduler@cluster.pools.small.scheduler=legacy",
                    "cluster/in_pool@cluster.pools.large.in_pool=shortest_queue",
                    "cluster/in_pool@cluster.pools.small.in_pool=round_robin"]),
    Case("mooncake-bench", mooncake, needs_data=True),
    Case("mooncake-bench-nostate", mooncake, with_state=False, needs_data=True),
]


def data_present() -> bool:
    from rlroute.datasets.store import resolve

    return resolve("mooncake/conversation_trace.jsonl").is_file()


def _compose(overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir

    from rlroute.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=["cluster=default", "~quality", *overrides])


def run_case(case: Case) -> dict[str, Any]:
    """Run ``case``; return its digest and readable counters."""
    cfg = _compose([*case.overrides, *(case.scaler or ())])
    cluster: SimCluster = build_cluster(cfg.cluster, rng=np.random.default_rng(case.seed))
    for ev in case.events:
        ev = dict(ev)
        cluster.schedule(ev.pop("time"), ev.pop("event"), **ev)
    auto = None
    if case.scaler is not None:
        from rlroute.scaling.sim import attach

        auto = attach(cluster, cfg.scaler)
    reqs = case.requests()
    acts = actions(case.actions, len(reqs), case.seed)
    d = Digest()
    n_out = failed = 0
    for req, a in zip(reqs, acts, strict=True):
        for c in cluster.advance(req.arrival):
            completion(d, c)
            n_out += 1
            failed += c.failed
        if case.with_state:
            state(d, cluster.state(), cluster.prefix_match(req))
        cluster.submit(req, a)
    for c in cluster.drain():
        completion(d, c)
        n_out += 1
        failed += c.failed
    insts = [i for p in cluster.pools.values() for i in p.instances]
    counters = {
        "completions": n_out,
        "failed": failed,
        "evicted_tokens": sum(i.cache.evicted_tokens for i in insts),
        "hit_tokens": sum(i.cache.hit_tokens for i in insts),
        "retracted": sum(getattr(i, "retracted_total", 0) for i in insts),
        "router_trims": sum(p.view.trims for p in cluster.pools.values() if p.view is not None),
        "instances": {n: len(p.instances) for n, p in cluster.pools.items()},
    }
    d.ints([counters["evicted_tokens"], counters["hit_tokens"], counters["retracted"], counters["router_trims"]])
    d.floats([i.busy_time for i in insts] + [p.lost_cost for p in cluster.pools.values()])
    if auto is not None:
        d.floats(list(auto.gpu_s.values()))
        d.text(repr(auto.scale_events))
        counters["scale_events"] = len(auto.scale_events)
    d.floats((cluster.now,))
    return {"digest": d.hexdigest(), **counters}


def compute(cases: Sequence[Case] = CASES, with_data: bool | None = None) -> dict[str, dict[str, Any]]:
    """Digests of ``cases`` (the data-dependent ones only when ``../shared/data`` is there)."""
    have = data_present() if with_data is None else with_data
    return {c.name: run_case(c) for c in cases if have or not c.needs_data}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help=f"record the digests into {REFERENCE.name}")
    ap.add_argument("--check", action="store_true", help="compare with the recorded digests")
    args = ap.parse_args(argv)
    got = compute()
    if args.write:
        ref = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
        ref.update(got)
        REFERENCE.write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(got)} digests to {REFERENCE}")
        return 0
    ref = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    bad = 0
    for name, row in got.items():
        same = ref.get(name, {}).get("digest") == row["digest"]
        bad += not same
        print(f"{'ok  ' if same else 'DIFF'} {name}: {row}")
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
