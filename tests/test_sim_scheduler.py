"""SGLang's scheduler in the simulator: hand-computed step sequences and a step-by-step reference.

The 4-term estimate profile makes every step ``a + b*prefill + c*decoding + d*context`` exactly, so the
expected times below are written out from the rules of ``rlroute/cluster/sim/sglang_instance.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rlroute.cluster.profiles import ServingProfile, load_profile
from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.scheduler import SchedulerConfig, parse_scheduler, sglang_chunked_prefill_size
from rlroute.types import Action, Request

EST = "qwen3-4b__h100.estimate"
P = load_profile(EST)
DECAY = (0.7 - 0.7 * 0.14) / 600


def cluster(kv: int = 10**8, **sched: Any) -> SimCluster:
    return SimCluster(pools={"small": {"profile": EST, "instances": 1, "scheduler": sched,
                                       "cache": {"kv_capacity_tokens": kv}}})


def dec(n: int, ctx: float) -> float:
    return P.a + P.c * n + P.d * ctx


def pre(tokens: int) -> float:
    return P.a + P.b * tokens


def run(cl: SimCluster, reqs: list[Request], together: bool = False) -> dict[int, Any]:
    """Submit ``reqs`` at their arrivals (``together``: all queued before the instance starts) and drain."""
    comps = []
    if together:
        cl.pause("small")
    for r in reqs:
        comps += cl.advance(r.arrival)
        cl.submit(r, Action.SMALL)
    if together:
        cl.resume("small")
    comps += cl.drain()
    return {c.request_id: c for c in comps}


@pytest.mark.parametrize("mixed", [False, True])
def test_prefill_only_and_mixed_step_sequences(mixed: bool) -> None:
    """A decodes; B arrives during A's first decode step. Prefill-only: B's prefill runs alone, A waits;
    mixed: A decodes inside B's prefill step."""
    t1 = pre(100)  # A's prefill: first token; A joins with context 101
    t2 = t1 + dec(1, 101)  # the decode step in flight when B arrives ends; A has 2 tokens
    if mixed:
        t3 = t2 + P.a + P.b * 200 + P.c * 1 + P.d * 102  # B's prefill + A's third (last) token
        a_end, b_first = t3, t3
        b_end = t3 + dec(1, 201)
    else:
        t3 = t2 + pre(200)  # prefill alone
        b_first = t3
        a_end = b_end = t3 + dec(2, 102 + 201)  # one decode step finishes both
    got = run(cluster(mixed_chunk=mixed), [Request(id=0, arrival=0.0, input_len=100, output_len=3),
                                           Request(id=1, arrival=t1 + 1e-6, input_len=200, output_len=2)])
    assert got[0].ttft == pytest.approx(t1, rel=1e-12)
    assert got[0].finish == pytest.approx(a_end, rel=1e-12)
    assert got[1].arrival + got[1].ttft == pytest.approx(b_first, rel=1e-12)
    assert got[1].finish == pytest.approx(b_end, rel=1e-12)


def reservation_case(decay_steps: float, out_b: int) -> tuple[SimCluster, dict[int, Any]]:
    """KV 1000. A (100 + max_new 400) and D (100 + 301) fit at t=0; B (100 + max_new 440) does not
    (500 + 401 + 540 > 1000) and waits, batch full, until D finishes after 300 decode steps."""
    cl = cluster(kv=1000, new_token_ratio_decay_steps=decay_steps)
    reqs = [Request(id=0, arrival=0.0, input_len=100, output_len=400, max_new_tokens=400),
            Request(id=1, arrival=0.0, input_len=100, output_len=301, max_new_tokens=301),
            Request(id=2, arrival=0.0, input_len=100, output_len=out_b, max_new_tokens=440)]
    return cl, run(cl, reqs, together=True)


def test_reservation_decays_and_ignores_true_output_length() -> None:
    t1 = pre(200)  # A and D prefill together
    t2 = t1 + sum(dec(2, 202 + 2 * x) for x in range(300))  # D's 300 decode steps; D finishes
    # At step 300 the ratio has decayed to 0.7 - 300*DECAY = 0.399; A has 301 of 400 tokens, so it reserves
    # 0.399 * 99 = 39.5; free = 1000 - (100 prompt + 300 decoded) = 600; B needs 100 + 440 = 540 < 560.5.
    _, got = reservation_case(600.0, out_b=50)
    assert got[1].finish == pytest.approx(t2, rel=1e-12)
    assert got[2].ttft == pytest.approx(t2 + pre(100), rel=1e-12)
    # The true output length of B changes nothing before its first token (the scheduler never reads it).
    _, got_long = reservation_case(600.0, out_b=400)
    assert got_long[2].ttft == pytest.approx(got[2].ttft, rel=1e-12)
    # Without decay A would still reserve 0.7 * 99 = 69.3 > 60: B waits for A's finish at step 399.
    _, slow = reservation_case(1e12, out_b=50)
    a_end = t2 + sum(dec(1, 101 + x) for x in range(300, 399))
    assert slow[0].finish == pytest.approx(a_end, rel=1e-12)
    assert slow[2].ttft == pytest.approx(a_end + pre(100), rel=1e-12)


def test_retract_decode_recomputes_the_request_with_fewest_tokens() -> None:
    """KV 900. A (100 + 400) and C (10 + 2) start; B (100 + 400) is admitted after C finishes, when A's
    reservation has shrunk to 0.699 * 398. Both really generate 400 tokens, so memory runs out at decode
    step 350: B (fewer tokens) is retracted, A finishes, B re-prefills prompt + 350 tokens and finishes."""
    cl = cluster(kv=900)
    reqs = [Request(id=0, arrival=0.0, input_len=100, output_len=400, max_new_tokens=400),
            Request(id=1, arrival=0.0, input_len=10, output_len=2, max_new_tokens=2),
            Request(id=2, arrival=0.0, input_len=100, output_len=400, max_new_tokens=400)]
    t1 = pre(110)
    t2 = t1 + dec(2, 101 + 11)  # C's last token
    t3 = t2 + pre(100)  # B's prefill (A waits)
    t4 = t3 + sum(dec(2, 201 + 2 * x) for x in range(1, 350))  # private KV 199 + 2x reaches 899 at x = 350
    inst = cl.pools["small"].instances[0]
    got: dict[int, Any] = {}
    cl.pause("small")
    for r in reqs:
        cl.submit(r, Action.SMALL)
    cl.resume("small")
    for c in cl.advance(t4 + 1e-9):  # the run ends at t4 (up to rounding)
        got[c.request_id] = c
    assert inst.ratio == (351 + 20) / 400  # set by the retraction: (decoded + 20 * bs) / max_new of those kept
    assert [s.job.req.id for s in inst.waiting] == [2] and inst.waiting[0].gen == 350
    assert inst.retracted_total == 1
    for c in cl.drain():
        got[c.request_id] = c
    t5 = t4 + dec(1, 101 + 350)  # A decodes once; then B does not fit (500 >= 449 - 0.9275*48): batch full
    a_end = t5 + sum(dec(1, 101 + x) for x in range(351, 399))
    t7 = a_end + pre(450)  # B recomputes prompt + 350 generated tokens: its 351st token
    b_end = t7 + sum(dec(1, 52 + x) for x in range(399, 448))
    assert got[1].finish == pytest.approx(t2, rel=1e-12)
    assert got[0].finish == pytest.approx(a_end, rel=1e-12)
    assert got[2].ttft == pytest.approx(t3, rel=1e-12)  # first token before the retraction
    assert got[2].finish == pytest.approx(b_end, rel=1e-12)
    assert got[2].output_tokens == 400 and not got[2].failed


@pytest.mark.parametrize("policy", ["fcfs", "lpm"])
def test_queue_policy_lpm_prefers_the_cached_prefix(policy: str) -> None:
    """A 64-token chunk budget fits one of two queued 64-token prompts per step; lpm takes the cached one."""
    cl = cluster(chunked_prefill_size=64, schedule_policy=policy)
    warm = tuple(range(1, 5))
    cl.submit(Request(id=0, arrival=0.0, input_len=64, output_len=1, blocks=warm, block_size=16), Action.SMALL)
    cl.drain()
    cl.pause("small")
    cl.submit(Request(id=1, arrival=1.0, input_len=64, output_len=1, blocks=(9, 10, 11, 12), block_size=16),
              Action.SMALL)
    cl.submit(Request(id=2, arrival=1.0, input_len=64, output_len=1, blocks=warm, block_size=16), Action.SMALL)
    cl.resume("small")
    got = {c.request_id: c for c in cl.drain()}
    first, second = (2, 1) if policy == "lpm" else (1, 2)
    assert got[first].finish < got[second].finish
    assert got[2].cached_tokens == 63  # SGLang computes at least one prompt token


def test_scheduler_config_defaults_and_errors() -> None:
    sc = SchedulerConfig()
    assert (sc.kind, sc.mixed_chunk, sc.max_prefill_tokens, sc.schedule_policy) == ("sglang", False, 16384, "fcfs")
    assert sc.min_new_token_ratio == pytest.approx(0.098) and sc.new_token_ratio_decay == pytest.approx(DECAY)
    assert [sglang_chunked_prefill_size(g) for g in (24, 40, 80, 141, 192)] == [2048, 4096, 8192, 8192, 16384]
    assert sc.chunk_size(80, 4096) == 8192 and parse_scheduler({"kind": "legacy"}, "x").chunk_size(80, 4096) == 4096
    with pytest.raises(ValueError, match="pools.small.scheduler.*unknown keys"):
        cluster(chunk=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        cluster(kind="vllm")
    with pytest.raises(ValueError, match="schedule_policy"):
        cluster(schedule_policy="lifo")


def test_request_larger_than_its_reservation_can_fit_is_rejected() -> None:
    got = run(cluster(kv=1000), [Request(id=0, arrival=0.0, input_len=100, output_len=10, max_new_tokens=2000)])
    assert got[0].failed and "max_new 2000" in (got[0].fail_reason or "")


def reference(p: ServingProfile, reqs: list[tuple[float, int, int]], chunk: int, mixed: bool,
              max_prefill: int = 16384) -> list[float]:
    """SGLang's loop one step at a time with ample KV: a prefill batch when one can be formed (chunked
    request first, then FIFO within the chunk and max_prefill_tokens budgets), else one decode step."""
    pending = sorted(range(len(reqs)), key=lambda i: reqs[i][0])
    waiting: list[int] = []
    chunked: list[int] | None = None  # [index, prompt tokens left]
    gen: dict[int, int] = {}
    finish = [0.0] * len(reqs)
    t = 0.0
    while pending or waiting or chunked or gen:
        while pending and reqs[pending[0]][0] <= t:
            waiting.append(pending.pop(0))
        if not (waiting or chunked or gen):
            t = reqs[pending[0]][0]
            continue
        nd = len(gen) if mixed else 0
        rem_chunk, rem_input = chunk - nd, max_prefill - nd
        batch: list[tuple[int, int, int]] = []  # index, tokens, tokens already in KV
        if chunked is not None:
            i, left = chunked
            take = min(left, rem_chunk)
            batch.append((i, take, reqs[i][1] - left))
            chunked = [i, left - take] if take < left else None
            rem_chunk -= take
            rem_input -= take
        while waiting and rem_chunk > 0 and rem_input > 0 and len(gen) + len(batch) < p.max_running_requests:
            i = waiting[0]
            n_in = reqs[i][1]
            if batch and n_in > rem_input:
                break
            waiting.pop(0)
            take = min(n_in, rem_chunk)
            batch.append((i, take, 0))
            if take < n_in:
                chunked = [i, n_in - take]
            rem_chunk -= take
            rem_input -= take
        ctx = sum(reqs[i][1] + g for i, g in gen.items())
        if batch:
            q_in = sum(k * (k + 1) / 2 for _, k, _ in batch)
            q_pre = sum(k * s for _, k, s in batch)
            t += p.step_time(sum(k for _, k, _ in batch), nd, ctx if mixed else 0, q_in, q_pre)
        else:
            t += p.step_time(0, len(gen), ctx)
        if mixed or not batch:
            for i in list(gen):
                gen[i] += 1
                if gen[i] == reqs[i][2]:
                    finish[i] = t
                    del gen[i]
        for i, _, _ in batch:
            if chunked is not None and chunked[0] == i:
                continue
            if reqs[i][2] == 1:
                finish[i] = t
            else:
                gen[i] = 1
    return finish


@pytest.mark.parametrize("profile", [EST, "qwen3-4b__h100", "qwen3-235b-a22b-fp8__h100x8"])
@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_event_driven_matches_sglang_step_by_step_reference(profile: str, mixed: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 25
    arrivals = np.sort(rng.uniform(0, 3.0, n))
    reqs = [(float(a), int(rng.integers(1, 12000)), int(rng.integers(1, 150))) for a in arrivals]
    pool = "small" if "4b" in profile else "large"
    cl = SimCluster(pools={pool: {"profile": profile, "instances": 1, "scheduler": {"mixed_chunk": mixed},
                                  "cache": {"kv_capacity_tokens": 10**8}}})
    act = Action.SMALL if pool == "small" else Action.LARGE
    got = run_actions(cl, [Request(id=k, arrival=a, input_len=i, output_len=o) for k, (a, i, o) in enumerate(reqs)],
                      act)
    p = load_profile(profile)
    want = reference(p, reqs, sglang_chunked_prefill_size(p.gpu_memory_gb), mixed)
    np.testing.assert_allclose([got[k].finish for k in range(n)], want, rtol=1e-9, atol=1e-9)


def run_actions(cl: SimCluster, reqs: list[Request], act: Action) -> dict[int, Any]:
    comps = []
    for r in reqs:
        comps += cl.advance(r.arrival)
        cl.submit(r, act)
    comps += cl.drain()
    return {c.request_id: c for c in comps}
