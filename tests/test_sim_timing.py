"""Step-time model and continuous batching: closed-form runs agree with a step-by-step reference."""

from __future__ import annotations

import numpy as np
import pytest

from rlroute.cluster.profiles import ServingProfile, load_profile
from rlroute.cluster.sim import SimCluster
from rlroute.types import Action, Request

PROFILES = ["qwen3-4b__h100", "qwen3-235b-a22b-fp8__h100x8"]
POOL = {"qwen3-4b__h100": "small", "qwen3-235b-a22b-fp8__h100x8": "large"}


def single(profile: str) -> SimCluster:
    """One instance of ``profile`` with an ample KV pool and no cache reuse (requests carry no blocks)."""
    pool = POOL[profile]
    return SimCluster(pools={pool: {"profile": profile, "instances": 1, "cache": {"kv_capacity_tokens": 10**8}}})


def reference(p: ServingProfile, reqs: list[tuple[float, int, int]]) -> list[float]:
    """One engine step at a time: FIFO chunked prefill mixed with decoding; returns finish times."""
    pending = sorted(range(len(reqs)), key=lambda i: reqs[i][0])
    prefill: list[list[int]] = []  # [index, prompt tokens left]
    dec: dict[int, int] = {}  # index -> tokens generated
    finish = [0.0] * len(reqs)
    t = 0.0
    while pending or prefill or dec:
        while pending and reqs[pending[0]][0] <= t:
            i = pending.pop(0)
            prefill.append([i, reqs[i][1]])
        if not prefill and not dec:
            t = reqs[pending[0]][0]
            continue
        chunk, budget, done = 0, p.chunked_prefill_tokens, []
        for item in prefill:
            take = min(item[1], budget - chunk)
            chunk += take
            if take == item[1]:
                done.append(item[0])
            item[1] -= take
            if chunk == budget:
                break
        ctx = sum(reqs[i][1] + g for i, g in dec.items())
        t += p.step_time(chunk, len(dec), ctx)
        for i in list(dec):
            dec[i] += 1
            if dec[i] == reqs[i][2]:
                finish[i] = t
                del dec[i]
        prefill = [item for item in prefill if item[1] > 0]
        for i in done:
            if reqs[i][2] == 1:
                finish[i] = t
            else:
                dec[i] = 1
    return finish


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_event_driven_matches_step_by_step_reference(profile: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 25
    arrivals = np.sort(rng.uniform(0, 3.0, n))
    reqs = [(float(a), int(rng.integers(1, 12000)), int(rng.integers(1, 150))) for a in arrivals]
    cl = single(profile)
    comps = []
    for k, (a, n_in, n_out) in enumerate(reqs):
        comps += cl.advance(a)
        cl.submit(Request(id=k, arrival=a, input_len=n_in, output_len=n_out), Action.SMALL if POOL[profile] == "small"
                  else Action.LARGE)
    comps += cl.drain()
    got = {c.request_id: c.finish for c in comps}
    want = reference(load_profile(profile), reqs)
    assert len(got) == n
    np.testing.assert_allclose([got[k] for k in range(n)], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("n_in", [1024, 20000])
def test_idle_ttft_equals_profile_prefill_time(profile: str, n_in: int) -> None:
    cl = single(profile)
    cl.submit(Request(id=0, arrival=0.0, input_len=n_in, output_len=5), Action.SMALL if POOL[profile] == "small"
              else Action.LARGE)
    (c,) = cl.drain()
    p = load_profile(profile)
    assert c.ttft == pytest.approx(p.prefill_time(n_in), rel=1e-12)
    assert c.queue_time == 0.0


@pytest.mark.parametrize("profile", PROFILES)
def test_step_time_grows_with_batch_and_context(profile: str) -> None:
    """TPOT of a batch of identical requests follows a + c*n + d*context, rising in n and in prompt length."""
    p = load_profile(profile)
    tpot = {}
    pool = POOL[profile]
    for n in (1, 8, 32):
        for n_in in (100, 250):  # n * n_in <= one prefill chunk, so all start decoding together
            cl = single(profile)
            cl.pause(pool)  # queue the whole batch first, then start it in one step
            for k in range(n):
                cl.submit(Request(id=k, arrival=0.0, input_len=n_in, output_len=33),
                          Action.SMALL if pool == "small" else Action.LARGE)
            cl.resume(pool)
            comps = cl.drain()
            tp = {round(c.tpot, 12) for c in comps}
            assert len(tp) == 1  # same batch throughout
            # 32 decode steps with n sequences whose context grows from n*(n_in+1) by n per step
            want = sum(p.step_time(0, n, n * (n_in + 1 + j)) for j in range(32)) / 32
            assert tp.pop() == pytest.approx(want, rel=1e-9)
            tpot[n, n_in] = want
    assert tpot[1, 100] < tpot[8, 100] < tpot[32, 100]
    assert tpot[1, 100] < tpot[1, 250] and tpot[32, 100] < tpot[32, 250]


def test_profiles_land_near_public_figures() -> None:
    # the hand-written estimates must land near public figures (measured files are checked by their fit)
    small = load_profile("qwen3-4b__h100.estimate")
    large = load_profile("qwen3-235b-a22b-fp8__h100x8.estimate")
    assert 0.005 <= small.step_time(0, 1, 1024) <= 0.008  # 5-8 ms/token at batch 1
    assert 0.030 <= small.prefill_time(1024) <= 0.060  # TTFT of a 1k prompt, idle
    assert 0.012 <= large.step_time(0, 1, 1024) <= 0.014  # 12-14 ms/token at batch 1
    assert 16_000 <= 8192 / (large.step_time(8192, 0, 0)) <= 22_000  # ~20k prefill tokens/s


def test_admission_waits_for_kv_and_max_running() -> None:
    """Two requests that each need 60 % of the KV pool run one after the other."""
    cl = SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 1,
                                     "cache": {"kv_capacity_tokens": 1000}}})
    for k in range(2):
        cl.submit(Request(id=k, arrival=0.0, input_len=500, output_len=100), Action.SMALL)
    cl.advance(0.01)
    st = cl.state().pools["small"].instances[0]
    assert (st.running, st.queued, st.kv_used_tokens) == (1, 1, 600)
    first, second = sorted(cl.drain(), key=lambda c: c.request_id)
    assert second.queue_time == pytest.approx(first.e2e)
    assert second.e2e == pytest.approx(2 * first.e2e)


def test_recent_rates_decay_exponentially_across_clock_rebases() -> None:
    """Output throughput of the recent window is sum(tokens * exp(-(now - t)/TAU)) / TAU, also hours later."""
    from rlroute.cluster.sim.instance import TAU

    cl = single("qwen3-4b__h100")
    finishes = []
    for k, t0 in enumerate([0.0, 3000.0, 7300.0]):  # spans two rebases of the decay clock (RENORM_S = 3600 s)
        cl.submit(Request(id=k, arrival=t0, input_len=100, output_len=50), Action.SMALL)
        (c,) = cl.advance(t0 + 10.0)
        finishes.append(c.finish)
    for now in (7310.0, 7400.0, 9000.0):
        cl.advance(now)
        want = sum(50 * np.exp(-(now - f) / TAU) for f in finishes) / TAU
        st = cl.state()
        assert st.pools["small"].instances[0].throughput == pytest.approx(want, rel=1e-9)
        assert st.pools["small"].throughput == pytest.approx(want, rel=1e-9)
        assert st.arrival_rate == pytest.approx(sum(np.exp(-(now - t) / TAU) for t in (0, 3000, 7300)) / TAU,
                                                rel=1e-9)
