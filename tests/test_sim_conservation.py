"""Conservation (every request completes exactly once or fails with a reason), faults, weight updates,
scaling, hybrid/cascade accounting and determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rlroute.cluster.base import Cluster, ClusterState
from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.run import fixed_policy, run
from rlroute.cluster.sim.synthetic import conversation_requests
from rlroute.types import Action, QualityDraw, Request

POOLS = {
    "large": {"profile": "qwen3-235b-a22b-fp8__h100x8", "instances": 2,
              "cache": {"mem_fraction_static": 0.5, "eviction": "lru", "ttl_s": 14400}},
    "small": {"profile": "qwen3-4b__h100", "instances": 4,
              "cache": {"mem_fraction_static": 0.7, "eviction": "lfu", "ttl_s": 1800}},
}


def cluster(**kw: object) -> SimCluster:
    return SimCluster(pools=POOLS, **kw)  # type: ignore[arg-type]


def check_conserved(reqs: list[Request], comps: list) -> None:
    ids = Counter(c.request_id for c in comps)
    assert set(ids) == {r.id for r in reqs}, "a request vanished or appeared"
    assert max(ids.values()) == 1, "a request completed twice"
    for c in comps:
        assert (c.fail_reason is not None) == c.failed
        assert c.finish >= c.arrival and c.e2e >= 0


def test_protocol_and_typed_state() -> None:
    cl = cluster()
    assert isinstance(cl, Cluster)
    st = cl.state()
    assert isinstance(st, ClusterState) and set(st.pools) == {"large", "small"}
    assert len(st.pools["small"].instances) == 4 and st.pools["small"].available
    assert st.pools["large"].instances[0].kv_capacity_tokens == cl.pools["large"].kv_cap


EVENTS = [
    (20.0, "fail_instance", {"pool": "small", "i": 0}),
    (25.0, "update_weights", {"pool": "large", "load_time_s": 8.0}),
    (30.0, "fail_instance", {"pool": "large", "i": 1}),
    (40.0, "recover_instance", {"pool": "small", "i": 0}),
    (45.0, "scale", {"pool": "small", "n": 6}),
    (50.0, "pause", {"pool": "small"}),
    (53.0, "flush_cache", {"pool": "small"}),
    (55.0, "resume", {"pool": "small"}),
    (60.0, "scale", {"pool": "small", "n": 2}),
    (70.0, "recover_instance", {"pool": "large", "i": 1}),
]


@pytest.mark.parametrize("seed", [0, 1])
def test_conservation_under_failures_weight_updates_and_scaling(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reqs = conversation_requests(600, 8.0, rng)
    cl = cluster(events=[{"time": t, "event": e, **kw} for t, e, kw in EVENTS])
    policy = fixed_policy("random", rng)
    comps = []
    for k, r in enumerate(reqs):
        comps += cl.advance(r.arrival)
        cl.submit(r, policy(r))
        if k % 25 == 0:  # bookkeeping invariants hold mid-run, not only at the end
            for pool in cl.pools.values():
                for inst in pool.instances:
                    assert inst.nload == len(inst.waiting) + len(inst.prefill) + len(inst.dec)
                    assert inst.kv_used <= inst.kv_cap
                    assert inst.cache.free_tokens <= inst.cache.total_tokens
    comps += cl.drain()
    check_conserved(reqs, comps)
    assert cl.in_flight == 0
    assert sum(c.retries for c in comps) > 0, "the failures should have re-queued running requests"
    assert cl.pools["large"].weight_updates == 1 and cl.pools["large"].last_weight_update == 25.0
    assert len(cl.pools["small"].instances) == 2  # scaled-down instances left once drained
    for pool in cl.pools.values():
        for inst in pool.instances:
            assert inst.load == 0 and inst.private == 0
            assert inst.cache.total_tokens == inst.cache.free_tokens  # nothing pinned after drain


def test_pool_down_fails_with_reason_and_retries_are_bounded() -> None:
    cl = cluster(max_retries=1, fault_handling={"detection": "instant"})  # the router sees failures at once
    cl.fail_instance("large", 0)
    cl.fail_instance("large", 1)
    req = Request(id=7, arrival=0.0, input_len=100, output_len=10)
    cl.submit(req, Action.LARGE)
    (c,) = cl.advance(1.0)
    assert c.failed and "no healthy instance in pool 'large'" in (c.fail_reason or "")
    # two failures in a row on the small pool exceed max_retries=1
    cl.submit(Request(id=8, arrival=1.0, input_len=5000, output_len=500), Action.SMALL)
    cl.advance(1.5)
    busy = [i.index for i in cl.pools["small"].instances if i.load]
    cl.fail_instance("small", busy[0])
    busy = [i.index for i in cl.pools["small"].instances if i.load]
    cl.fail_instance("small", busy[0])
    (c,) = cl.drain()
    assert c.failed and c.retries == 2 and "gave up after 1 retries" in (c.fail_reason or "")


def test_paused_pool_without_resume_fails_at_drain() -> None:
    cl = cluster()
    cl.pause("small")
    cl.submit(Request(id=1, arrival=0.0, input_len=100, output_len=10), Action.SMALL)
    (c,) = cl.drain()
    assert c.failed and "unfinished at drain" in (c.fail_reason or "")


def test_weight_update_delays_requests_by_the_load_time() -> None:
    base = cluster()
    base.submit(Request(id=1, arrival=0.0, input_len=1000, output_len=200), Action.SMALL)
    (ref,) = base.drain()
    cl = cluster()
    cl.submit(Request(id=1, arrival=0.0, input_len=1000, output_len=200), Action.SMALL)
    cl.advance(0.5)
    cl.update_weights("small", load_time_s=10.0)
    (c,) = cl.drain()
    assert c.e2e == pytest.approx(ref.e2e + 10.0, abs=0.05)  # paused for the load (+ the step in flight)


@pytest.mark.parametrize(("mode", "escalated", "pools"), [
    ("plan_and_execute", False, ("large", "small")),
    ("cascade", False, ("small",)),
    ("cascade", True, ("small", "large")),
])
def test_hybrid_is_one_completion_with_summed_tokens_and_cost(mode: str, escalated: bool, pools: tuple) -> None:
    cl = cluster(hybrid={"mode": mode, "plan_tokens": 32})
    q = QualityDraw(p=(0.9, 0.6, 0.8), ok=(True, False, escalated), escalated=escalated)
    req = Request(id=3, arrival=0.0, input_len=2000, output_len=100, blocks=tuple(range(4)), block_size=512,
                  quality=q)
    cl.submit(req, Action.HYBRID)
    (c,) = cl.drain()
    assert c.pools == pools and len(c.instances) == len(pools) and not c.failed
    assert c.quality_ok is escalated
    cm = cl.cost_model
    if mode == "plan_and_execute":
        assert c.prompt_tokens == 2000 + 2032 and c.output_tokens == 32 + 100
        # the plan cached the prompt's 3 full blocks on a large instance only; the small instance is cold
        want = cm.request_cost("large", 2000, 0, 32) + cm.request_cost("small", 2032, 0, 100)
    else:
        assert c.output_tokens == 100 * len(pools)
        want = sum(cm.request_cost(p, 2000, 0, 100) for p in pools)
    assert c.cost == pytest.approx(want)
    assert 0 < c.ttft < c.e2e


def test_same_seed_same_result_and_seed_matters() -> None:
    def once(seed: int) -> list[tuple]:
        rng = np.random.default_rng(seed)
        reqs = conversation_requests(400, 10.0, rng)
        pools = {k: {**v, "in_pool": {"_target_": "rlroute.cluster.inpool.PowerOfTwo"}} for k, v in POOLS.items()}
        cl = SimCluster(pools=pools, rng=np.random.default_rng(seed))
        return [(c.request_id, c.finish, c.cached_tokens, c.instances) for c in run(cl, reqs, fixed_policy("random", rng))]

    assert once(3) == once(3)
    assert once(3) != once(4)


def test_scale_up_adds_serving_instances_and_scale_down_drains_them() -> None:
    pools = {"small": {"profile": "qwen3-4b__h100", "instances": 2, "in_pool": {"_target_": "rlroute.cluster.inpool.RoundRobin"}}}
    cl = SimCluster(pools=pools)
    cl.scale("small", 4)
    for k in range(8):
        cl.submit(Request(id=k, arrival=0.0, input_len=3000, output_len=400), Action.SMALL)
    assert [i.load for i in cl.pools["small"].instances] == [2, 2, 2, 2]
    cl.scale("small", 1)  # instances 1..3 finish what they run, then leave
    assert len(cl.state().pools["small"].instances) == 4
    assert [s.healthy for s in cl.state().pools["small"].instances] == [True, False, False, False]
    comps = cl.drain()
    assert len(comps) == 8 and not any(c.failed for c in comps)
    assert len(cl.pools["small"].instances) == 1 and len(cl.state().pools["small"].instances) == 1


EVENT_NAMES = ["fail_instance", "recover_instance", "pause", "resume", "flush_cache", "update_weights", "scale"]


def check_invariants(cl: SimCluster) -> None:
    for pool in cl.pools.values():
        for inst in pool.instances:
            assert inst.nload == len(inst.waiting) + len(inst.prefill) + len(inst.dec)
            assert inst.kv_used <= inst.kv_cap
            c = inst.cache
            segs = set(c.nodes.values())
            assert sum(s.tokens for s in segs if s.ref == 0) == c.free_tokens <= c.total_tokens
            assert sum(1 for s in segs if s.ref == 0) == c.n_free


@pytest.mark.parametrize("seed", range(6))
def test_random_event_storm_keeps_invariants_and_conservation(seed: int) -> None:
    """Random failures, recoveries, pauses, flushes, weight updates and scaling over every eviction policy,
    in-pool policy and hybrid mode: accounting stays exact and no request is lost."""
    rng = np.random.default_rng(seed)
    reqs = conversation_requests(300, float(rng.uniform(2, 30)), rng)
    for r in reqs:
        esc = bool(rng.random() < 0.3)
        r.quality = QualityDraw(p=(0.9, 0.6, 0.7), ok=(True, False, esc), escalated=esc)
    in_pool = "rlroute.cluster.inpool." + ["CacheAware", "RoundRobin", "ShortestQueue", "PowerOfTwo"][seed % 4]
    ev = ["lru", "lfu", "ttl"][seed % 3]
    pools = {
        "large": {**POOLS["large"], "cache": {"mem_fraction_static": 0.5, "eviction": ev, "ttl_s": 30.0},
                  "in_pool": {"_target_": in_pool}},
        "small": {**POOLS["small"], "cache": {"eviction": ev, "ttl_s": 20.0 if ev == "ttl" else None,
                                              "kv_capacity_tokens": int(rng.integers(40_000, 400_000))},
                  "in_pool": {"_target_": in_pool}},
    }
    cl = SimCluster(pools=pools, hybrid={"mode": ["plan_and_execute", "cascade", "pipelined"][seed % 3], "plan_tokens": 50},
                    rng=rng, max_retries=int(rng.integers(0, 4)))
    for _ in range(int(rng.integers(5, 15))):
        t = float(rng.uniform(0, reqs[-1].arrival))
        name, pool = EVENT_NAMES[int(rng.integers(len(EVENT_NAMES)))], ["large", "small"][int(rng.integers(2))]
        kw: dict = {"pool": pool}
        if name in ("fail_instance", "recover_instance"):
            kw["i"] = 0
        elif name == "update_weights":
            kw.update(load_time_s=float(rng.uniform(0, 20)), flush=bool(rng.random() < 0.5))
        elif name == "scale":
            kw["n"] = int(rng.integers(1, 7))
        elif name == "pause":
            cl.schedule(t + float(rng.uniform(0, 30)), "resume", pool=pool)
        cl.schedule(t, name, **kw)
    comps = []
    for k, r in enumerate(reqs):
        comps += cl.advance(r.arrival)
        cl.state()
        cl.prefix_match(r)
        cl.submit(r, int(rng.integers(0, 3)))
        if k % 20 == 0:
            check_invariants(cl)
    comps += cl.drain()
    check_conserved(reqs, comps)
    check_invariants(cl)
    for pool in cl.pools.values():
        for inst in pool.instances:
            assert inst.nload == 0 and inst.cache.total_tokens == inst.cache.free_tokens


def test_new_instances_serve_after_their_startup_time() -> None:
    cl = SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 1, "in_pool": {"_target_": "rlroute.cluster.inpool.RoundRobin"}}})
    cl.scale("small", 2, startup_s=30.0)
    assert [s.healthy for s in cl.state().pools["small"].instances] == [True, False]
    cl.submit(Request(id=0, arrival=1.0, input_len=100, output_len=5), Action.SMALL)
    cl.advance(31.0)
    assert [s.healthy for s in cl.state().pools["small"].instances] == [True, True]
    cl.submit(Request(id=1, arrival=31.0, input_len=100, output_len=5), Action.SMALL)
    cl.submit(Request(id=2, arrival=31.0, input_len=100, output_len=5), Action.SMALL)
    comps = cl.drain()
    assert {c.instances for c in comps} == {(0,), (1,)}
