"""Simulator forks (rlroute.cluster.sim.fork): a fork evolves exactly as the original, and is independent."""

from __future__ import annotations

import numpy as np
import pytest

from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.fork import Snapshot, fork
from rlroute.cluster.sim.synthetic import conversation_requests
from rlroute.types import Completion, Request

POOLS = {
    "large": {"profile": "qwen3-235b-a22b-fp8__h100x8", "instances": 2,
              "cache": {"mem_fraction_static": 0.5, "eviction": "lru", "ttl_s": 14400}},
    "small": {"profile": "qwen3-4b__h100", "instances": 4,
              "cache": {"mem_fraction_static": 0.7, "eviction": "lfu", "ttl_s": 1800},
              "in_pool": {"_target_": "rlroute.cluster.inpool.PowerOfTwo"}},
}
# A failure and a weight update scheduled after the fork point: forks must carry pending operator events.
EVENTS = [{"time": 300.0, "event": "fail_instance", "pool": "small", "i": 1},
          {"time": 320.0, "event": "update_weights", "pool": "large", "load_time_s": 5.0}]


def requests(n: int = 900, rate: float = 4.0) -> list[Request]:
    return conversation_requests(n, rate, np.random.default_rng(7), block_size=64)


def cluster(scheduler: str = "sglang") -> SimCluster:
    pools = {name: {**p, "scheduler": {"kind": scheduler}} for name, p in POOLS.items()}
    return SimCluster(pools=pools, events=EVENTS, rng=np.random.default_rng(3))  # type: ignore[arg-type]


def drive(cl: SimCluster, reqs: list[Request], actions: np.ndarray) -> list[Completion]:
    out: list[Completion] = []
    for r, a in zip(reqs, actions, strict=True):
        out += cl.advance(r.arrival)
        cl.submit(r, int(a))
    return out + cl.drain()


@pytest.mark.parametrize("scheduler", ["sglang", "legacy"])
def test_fork_evolves_exactly_as_the_original(scheduler: str) -> None:
    reqs = requests()
    actions = np.random.default_rng(0).integers(0, 3, len(reqs))
    cut = len(reqs) // 2
    cl = cluster(scheduler)
    for r, a in zip(reqs[:cut], actions[:cut], strict=True):
        cl.advance(r.arrival)
        cl.submit(r, int(a))
    assert cl.in_flight > 0 and cl.now < EVENTS[0]["time"], "fork point must be mid-run, before the events"
    twin = fork(cl)
    assert twin is not cl and twin.now == cl.now and twin.in_flight == cl.in_flight
    a = drive(cl, reqs[cut:], actions[cut:])
    b = drive(twin, reqs[cut:], actions[cut:])
    assert len(a) > 0 and a == b
    for c in (cl, twin):  # each copy ran its own scheduled events (not the other's)
        assert c.pools["large"].weight_updates == 1 and not c.pools["small"].instances[1].healthy
    assert cl.state() == twin.state()


def test_mutating_a_fork_leaves_the_original_unchanged() -> None:
    reqs = requests()
    actions = np.random.default_rng(1).integers(0, 3, len(reqs))
    cut = len(reqs) // 2
    ref, cl = cluster(), cluster()
    for c in (ref, cl):
        for r, a in zip(reqs[:cut], actions[:cut], strict=True):
            c.advance(r.arrival)
            c.submit(r, int(a))
    before = (cl.now, cl.in_flight, cl.submitted)
    caches = [(i.cache.total_tokens, len(i.cache.nodes)) for p in cl.pools.values() for i in p.instances]
    # Run the fork far ahead with different actions, past the scheduled events, and flush a cache.
    other = fork(cl)
    drive(other, reqs[cut:], (actions[cut:] + 1) % 3)
    other.flush_cache("small")
    assert other.pools["large"].weight_updates == 1
    assert (cl.now, cl.in_flight, cl.submitted) == before
    assert cl.pools["large"].weight_updates == 0 and cl.pools["small"].instances[1].healthy
    assert [(i.cache.total_tokens, len(i.cache.nodes)) for p in cl.pools.values() for i in p.instances] == caches
    # The original then behaves exactly like a cluster that was never forked.
    assert drive(cl, reqs[cut:], actions[cut:]) == drive(ref, reqs[cut:], actions[cut:])


def test_fork_shares_requests_and_copies_in_pool_randomness() -> None:
    reqs = requests(200)
    cl = cluster()
    for r in reqs[:100]:
        cl.advance(r.arrival)
        cl.submit(r, 1)
    twin = fork(cl)
    assert twin._rng is not cl._rng
    assert twin.pools["small"].policy.rng is twin._rng  # one generator, shared inside each copy as before
    assert twin._rng.bit_generator.state == cl._rng.bit_generator.state
    jobs = {id(s.job.req) for p in twin.pools.values() for i in p.instances for s in i.waiting}
    originals = {id(r) for r in reqs}
    assert jobs <= originals  # requests are shared (read-only), not copied


def test_fork_names_uncopyable_state() -> None:
    cl = cluster()
    cl.hook = lambda: None  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="fork: SimCluster holds state that cannot be copied"):
        fork(cl)


def test_snapshot_restores_independent_copies() -> None:
    reqs = requests(300)
    cl = cluster()
    for r in reqs[:150]:
        cl.advance(r.arrival)
        cl.submit(r, 0)
    snap = Snapshot(cl)
    a, b = snap.restore(), snap.restore()
    assert a is not b and a._heap is not b._heap
    assert drive(a, reqs[150:], np.ones(150, dtype=int)) == drive(cl, reqs[150:], np.ones(150, dtype=int))
    assert b.now < a.now and b.in_flight > 0  # b untouched by a's run
