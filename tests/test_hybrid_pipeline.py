"""The pipelined hybrid in the simulator (rlroute/cluster/base.py ``Hybrid``): the small pool is warmed with
the prompt while the large pool plans, and the answer hits the warmed prefix.

Both pools use the 4-term estimate profile, so every step is ``a + b*prefill + c*decoding + d*context``
exactly and the expected times are written out from the rules of ``rlroute/cluster/sim/sglang_instance.py``
(as ``tests/test_sim_scheduler.py`` does).
"""

from __future__ import annotations

import numpy as np
import pytest

from rlroute.cluster.base import Hybrid, action_stages, plan_length, warmup_stage
from rlroute.cluster.profiles import load_profile
from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.fork import fork
from rlroute.quality.hybrid import PlanAndExecute
from rlroute.types import Action, Completion, QualityDraw, Request

EST = "qwen3-4b__h100.estimate"
P = load_profile(EST)
N_IN, PLAN, OUT, BS = 1000, 32, 5, 100


def cluster(mode: str, small: int = 2, **kw: object) -> SimCluster:
    pool = {"profile": EST, "cache": {"kv_capacity_tokens": 10**6}}
    return SimCluster(pools={"large": {**pool, "instances": 1}, "small": {**pool, "instances": small}},
                      hybrid={"mode": mode, "plan_tokens": PLAN}, **kw)  # type: ignore[arg-type]


def request(rid: int = 7, arrival: float = 0.0, blocks: tuple[int, ...] | None = None) -> Request:
    q = QualityDraw(p=(0.9, 0.6, 0.8), ok=(True, False, True))
    return Request(id=rid, arrival=arrival, input_len=N_IN, output_len=OUT,
                   blocks=blocks if blocks is not None else tuple(range(100, 100 + N_IN // BS)), block_size=BS,
                   quality=q)


def pre(tokens: int) -> float:
    return P.a + P.b * tokens


def dec(ctx: int) -> float:  # one decode step of a batch of one
    return P.a + P.c + P.d * ctx


def one(mode: str) -> tuple[SimCluster, Completion]:
    cl = cluster(mode)
    cl.submit(request(), Action.HYBRID)
    (c,) = cl.drain()
    return cl, c


def plan_done() -> float:
    """The plan on the large instance: prefill (first plan token), then PLAN - 1 decode steps."""
    return pre(N_IN) + sum(dec(N_IN + 1 + k) for k in range(PLAN - 1))


@pytest.mark.parametrize("mode", ["plan_and_execute", "pipelined"])
def test_timing_matches_the_hand_computed_sequence(mode: str) -> None:
    """Serial: the answer prefills prompt + plan on a cold small instance. Pipelined: the prompt was
    prefilled there at t=0 (done long before the plan), so the answer prefills only the plan's 32 tokens."""
    _, c = one(mode)
    extend = PLAN if mode == "pipelined" else N_IN + PLAN
    first = plan_done() + pre(extend)  # the client's first token: the answer's (the plan is not streamed)
    finish = first + sum(dec(N_IN + PLAN + 1 + k) for k in range(OUT - 1))
    assert c.ttft == pytest.approx(first, rel=1e-12)
    assert c.e2e == pytest.approx(finish, rel=1e-12)
    assert c.output_tokens == PLAN + OUT and c.prompt_tokens == N_IN + N_IN + PLAN
    assert c.pools == ("large", "small") and not c.failed
    assert c.cached_tokens == (N_IN if mode == "pipelined" else 0)


def test_warm_prefix_is_hit_on_the_warmed_instance_and_billed() -> None:
    cl, c = one("pipelined")
    small = cl.pools["small"].instances
    warmed = [i for i in small if i.completed]
    assert len(warmed) == 1 and warmed[0].completed == 2  # warm-up and answer on the same instance
    assert c.instances[1] == warmed[0].index
    cache = warmed[0].cache
    assert cache.miss_tokens == N_IN + PLAN and cache.hit_tokens == N_IN  # warm-up misses, answer hits
    cm = cl.cost_model
    want = (cm.request_cost("large", N_IN, 0, PLAN) + cm.request_cost("small", N_IN, 0, 0)
            + cm.request_cost("small", N_IN + PLAN, N_IN, OUT))
    assert c.cost == pytest.approx(want)
    assert cl.pools["small"].cost == pytest.approx(want - cm.request_cost("large", N_IN, 0, PLAN))


def test_answer_follows_the_pin_against_the_in_pool_policy() -> None:
    """Round-robin would send the answer to the other small instance; the pin keeps it on the warmed one."""
    pools = {"large": {"profile": EST, "instances": 1},
             "small": {"profile": EST, "instances": 2, "in_pool": {"_target_": "rlroute.cluster.inpool.RoundRobin"}}}
    cl = SimCluster(pools=pools, hybrid={"mode": "pipelined", "plan_tokens": PLAN})
    cl.submit(request(), Action.HYBRID)
    (c,) = cl.drain()
    assert c.cached_tokens == N_IN
    assert [i.completed for i in cl.pools["small"].instances].count(2) == 1


def test_warmed_instance_down_sends_the_answer_elsewhere_cold() -> None:
    cl = cluster("pipelined", fault_handling={"detection": "instant"})
    cl.submit(request(), Action.HYBRID)
    cl.advance(pre(N_IN) / 2)  # the warm-up is prefilling
    warmed = next(i for i in cl.pools["small"].instances if i.load)
    cl.fail_instance("small", warmed.index)
    (c,) = cl.drain()
    assert not c.failed and c.instances[1] != warmed.index and c.cached_tokens == 0
    assert c.retries == 0  # a lost warm-up is dropped, not retried, and costs the request nothing more


@pytest.mark.parametrize("mode", ["plan_and_execute", "pipelined"])
def test_fork_evolves_exactly_as_the_original(mode: str) -> None:
    cl = cluster(mode)
    for i in range(6):
        cl.advance(0.05 * i)
        cl.submit(request(rid=i, arrival=0.05 * i, blocks=tuple(range(10 * i, 10 * i + 10))), Action.HYBRID)
    twin = fork(cl)
    assert [(c.request_id, c.finish, c.cost) for c in cl.drain()] == \
        [(c.request_id, c.finish, c.cost) for c in twin.drain()]


def test_plan_length_default_is_fixed_and_a_spread_is_lognormal_capped_and_deterministic() -> None:
    req = request()
    assert plan_length(req, Hybrid()) == 64 and plan_length(req, Hybrid(plan_tokens=900, plan_cap=512)) == 512
    h = Hybrid(mode="pipelined", plan_tokens=128, plan_sigma=0.85, plan_cap=512)
    lens = np.array([plan_length(request(rid=i), h) for i in range(4000)])
    assert lens.max() == 512 and lens.min() >= 1
    assert np.median(lens) == pytest.approx(128, rel=0.06)
    inner = np.log(lens[(lens > 20) & (lens < 400)])
    assert 0.6 < np.std(np.log(lens[lens < 512])) < 0.9 and inner.size > 3000
    assert plan_length(request(rid=11), h) == plan_length(request(rid=11), h)
    stages = action_stages(Action.HYBRID, req, h)
    assert stages[0] == ("large", N_IN, plan_length(req, h), 512)  # the engine is asked for the cap
    assert stages[1][1] == N_IN + plan_length(req, h)
    assert warmup_stage(Action.HYBRID, req, h) == ("small", N_IN, 0, 0)
    assert warmup_stage(Action.HYBRID, req, Hybrid()) is None and warmup_stage(Action.SMALL, req, h) is None


def test_hybrid_settings_come_from_the_quality_block_and_bad_ones_are_named() -> None:
    q = PlanAndExecute(plan_tokens=96, mode="pipelined", plan_sigma=0.5, plan_cap=300)
    assert Hybrid.of(q) == Hybrid("pipelined", 96, 0.5, 300)
    with pytest.raises(ValueError, match="hybrid.mode"):
        Hybrid(mode="parallel")
    with pytest.raises(ValueError, match="plan_sigma"):
        Hybrid(plan_sigma=-1.0)
    with pytest.raises(ValueError, match="plan_cap"):
        Hybrid(plan_cap=0)
    with pytest.raises(ValueError, match="does not match its class"):
        PlanAndExecute(mode="cascade")
