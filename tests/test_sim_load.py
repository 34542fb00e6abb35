"""Queueing behaviour: latency rises with offered load; past capacity the queue grows without bound."""

from __future__ import annotations

import numpy as np

from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.run import fixed_policy, run
from rlroute.types import Request

ONE_SMALL = {"small": {"profile": "qwen3-4b__h100", "instances": 1}}


def poisson(rate: float, duration: float, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration * 1.2)))
    t = t[t < duration]
    n_in = rng.integers(200, 2000, t.size)
    n_out = rng.integers(20, 300, t.size)
    return [Request(id=i, arrival=float(a), input_len=int(p), output_len=int(o))
            for i, (a, p, o) in enumerate(zip(t, n_in, n_out, strict=True))]


def test_mean_latency_rises_with_offered_load() -> None:
    means = []
    for rate in (2.0, 10.0, 25.0, 40.0):
        cl = SimCluster(pools=ONE_SMALL)
        comps = run(cl, poisson(rate, 60.0, seed=1), fixed_policy("all_small", np.random.default_rng(0)))
        assert not any(c.failed for c in comps)
        means.append(float(np.mean([c.e2e for c in comps])))
    assert all(a < b for a, b in zip(means, means[1:], strict=False)), means


def test_queue_grows_without_bound_past_capacity() -> None:
    cl = SimCluster(pools=ONE_SMALL)
    reqs = poisson(150.0, 40.0, seed=2)  # far above one instance's capacity
    queued = []
    it = iter(reqs)
    for checkpoint in (10.0, 20.0, 30.0, 40.0):
        for r in it:
            cl.advance(r.arrival)
            cl.submit(r, 1)
            if r.arrival >= checkpoint:
                break
        queued.append(cl.state().pools["small"].instances[0].queued)
    assert all(b > a + 100 for a, b in zip(queued, queued[1:], strict=False)), queued
    st = cl.state().pools["small"].instances[0]
    assert st.running > 0 and st.kv_used_tokens <= st.kv_capacity_tokens
