"""Failures as a production router sees them (rlroute/cluster/sim/faults.py), against hand-computed
timelines: health-check detection and recovery, refused attempts re-sent with exponential backoff, the
circuit breaker, hung instances timing out, and the work lost on a failed instance billed."""

from __future__ import annotations

import copy

import pytest

from rlroute.cluster.profiles import chunk_pairs, load_profile
from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.faults import FaultHandling
from rlroute.types import Action, Request

NO_JITTER = {"retry_jitter": 0.0}  # backoffs exactly 50 ms x 1.5^(n-1)


def small_pool(n: int, **kw: object) -> SimCluster:
    pools = {"small": {"profile": "qwen3-4b__h100", "instances": n, "in_pool": {"_target_": "rlroute.cluster.inpool.RoundRobin"}}}
    return SimCluster(pools=pools, **kw)  # type: ignore[arg-type]


def healthy(cl: SimCluster) -> list[bool]:
    return [s.healthy for s in cl.state().pools["small"].instances]


def test_sglang_router_defaults() -> None:
    f = FaultHandling()
    assert (f.health_check_interval_s, f.health_failure_threshold, f.health_success_threshold) == (60, 3, 2)
    assert (f.cb_failure_threshold, f.request_timeout_s) == (10, 1800)
    assert [f.backoff(n, 0.5) for n in (1, 2, 3)] == pytest.approx([0.05, 0.075, 0.1125])
    assert f.backoff(40, 0.5) == 30.0 and f.backoff(1, 0.0) == pytest.approx(0.04) and f.backoff(1, 1.0) == pytest.approx(0.06)


def test_failure_is_seen_after_three_failed_health_checks_and_recovery_after_two_good_ones() -> None:
    cl = small_pool(2)
    cl.schedule(70.0, "fail_instance", pool="small", i=1)
    cl.schedule(300.0, "recover_instance", pool="small", i=1)
    cl.advance(239.9)  # checks at 120 and 180 failed, the third (240) not yet run
    assert healthy(cl) == [True, True] and not cl.pools["small"].instances[1].healthy
    cl.advance(240.0)  # 120 + (3 - 1) x 60
    assert healthy(cl) == [True, False]
    assert cl.pools["small"].detections == [(70.0, 240.0)]
    cl.advance(359.9)  # back at 300: good checks at 300 and 360
    assert healthy(cl) == [True, False] and cl.pools["small"].instances[1].healthy
    cl.advance(360.0)
    assert healthy(cl) == [True, True]


def test_an_attempt_on_an_undetected_dead_instance_is_refused_and_resent_after_the_backoff() -> None:
    ref = small_pool(2, fault_handling=NO_JITTER)
    ref.advance(11.05)
    ref.submit(Request(id=1, arrival=11.05, input_len=1000, output_len=20), Action.SMALL)
    (want,) = ref.drain()
    cl = small_pool(2, fault_handling=NO_JITTER)
    cl.schedule(10.0, "fail_instance", pool="small", i=0)
    cl.advance(11.0)
    cl.submit(Request(id=1, arrival=11.0, input_len=1000, output_len=20), Action.SMALL)  # round robin: instance 0
    (c,) = cl.drain()
    assert not c.failed and c.retries == 1 and c.instances == (1,)
    assert c.ttft == pytest.approx(0.05 + want.ttft) and c.e2e == pytest.approx(0.05 + want.e2e)


def test_resends_back_off_exponentially_then_give_up_and_the_circuit_breaker_detects() -> None:
    cl = small_pool(1, fault_handling=NO_JITTER)  # max_retries 4: five attempts in all
    cl.schedule(1.0, "fail_instance", pool="small", i=0)
    cl.advance(2.0)
    for k in (1, 2):
        cl.submit(Request(id=k, arrival=2.0, input_len=100, output_len=5), Action.SMALL)
    comps = cl.advance(3.0)
    # attempts at 2, 2.05, 2.125, 2.2375, 2.40625 (waits 50, 75, 112.5, 168.75 ms), all refused
    assert [c.finish for c in comps] == pytest.approx([2.40625, 2.40625])
    assert all(c.failed and c.retries == 5 and "connection refused; gave up after 4 retries" in (c.fail_reason or "")
               for c in comps)
    # two requests x five refusals = the circuit breaker's 10 consecutive failures: detected long before 120 s
    assert cl.pools["small"].detections == [(1.0, pytest.approx(2.40625))]
    cl.submit(Request(id=3, arrival=3.0, input_len=100, output_len=5), Action.SMALL)
    (c3,) = cl.advance(3.0)
    assert c3.failed and "no healthy instance" in (c3.fail_reason or "")


def test_requests_on_a_hung_instance_time_out_then_move() -> None:
    cl = small_pool(2, fault_handling={**NO_JITTER, "request_timeout_s": 5.0})
    cl.submit(Request(id=1, arrival=0.0, input_len=3000, output_len=2000), Action.SMALL)  # instance 0
    cl.advance(1.0)
    cl.fail_instance("small", 0, mode="hang")
    assert cl.advance(5.0 - 1e-9) == []  # the router waits for its timeout (sent at 0, 5 s)
    (c,) = cl.drain()
    assert not c.failed and c.retries == 1 and c.instances == (1,)
    prof = load_profile("qwen3-4b__h100")
    assert c.ttft == pytest.approx(5.05 + prof.step_time(3000, 0, 0, chunk_pairs(3000)))


def test_work_lost_on_a_failed_instance_is_billed_in_cost_and_gpu_time() -> None:
    prof = load_profile("qwen3-4b__h100")
    prompt, out = 2000, 100
    t = prof.step_time(prompt, 0, 0, chunk_pairs(prompt))  # first token at the end of the prefill step
    boundaries = [t]
    for k in range(12):  # then one decode step per token; the context grows by one each step
        t += prof.step_time(0, 1, prompt + 1 + k)
        boundaries.append(t)
    t_fail = (boundaries[10] + boundaries[11]) / 2  # 10 decode steps done: 11 tokens generated
    cl = small_pool(2, fault_handling={"detection": "instant"})
    cl.submit(Request(id=1, arrival=0.0, input_len=prompt, output_len=out), Action.SMALL)
    cl.advance(t_fail)
    before = copy.deepcopy(cl)  # the cluster state deep-copies (a simulator fork)
    cl.fail_instance("small", 0)
    (c,) = cl.drain()
    cm, pool = cl.cost_model, cl.pools["small"]
    lost = cm.request_cost("small", prompt, 0, 11)
    assert pool.lost_cost == pytest.approx(lost)
    assert c.cost == pytest.approx(lost + cm.request_cost("small", prompt, 0, out)) and c.retries == 1
    assert pool.lost_gpu_s == pytest.approx(cl.gpu_clock.gpu_seconds("small", prompt, 0, 11))
    assert pool.instances[0].busy_time == pytest.approx(t_fail)  # the interrupted decode run counts as busy
    (c0,) = before.drain()  # the fork, never failed, is unaffected
    assert not c0.failed and c0.cost == pytest.approx(cm.request_cost("small", prompt, 0, out))
