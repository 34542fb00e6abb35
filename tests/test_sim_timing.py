"""Step-time model and continuous batching: closed-form runs agree with a step-by-step reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from rlroute.cluster.profiles import PROFILE_DIR, ServingProfile, load_profile
from rlroute.cluster.sim import SimCluster
from rlroute.types import Action, Request

LARGE = "qwen3-235b-a22b-fp8__h100x8"
# the 4-term estimate; measured 4B (step_time_attn); derived 235B and measured 30B-A3B (step_time_moe,
# with the attention terms); "moe-only": the 235B's MoE block without the attention terms
PROFILES = ["qwen3-4b__h100.estimate", "qwen3-4b__h100", LARGE, "qwen3-30b-a3b__h100", "moe-only"]
SMALL_PROFILES = {"qwen3-4b__h100.estimate", "qwen3-4b__h100"}


def materialise(profile: str, tmp_path: Path) -> str:
    """A loadable profile name; ``moe-only`` is written to ``tmp_path`` from the derived large profile."""
    if profile != "moe-only":
        return profile
    raw = yaml.safe_load((PROFILE_DIR / f"{LARGE}.derived.yaml").read_text())
    raw["step_time_moe"]["coeffs"].pop("f")
    raw["step_time_moe"]["coeffs"].pop("g")
    path = tmp_path / "moe-only.derived.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def pool_of(profile: str) -> str:
    return "small" if profile in SMALL_PROFILES else "large"


def action(profile: str) -> Action:
    return Action.SMALL if profile in SMALL_PROFILES else Action.LARGE


def single(profile: str, name: str | None = None, kind: str = "sglang") -> SimCluster:
    """One instance of ``profile`` (loaded as ``name`` if given) with an ample KV pool and no cache reuse
    (requests carry no blocks), under the ``kind`` scheduler."""
    return SimCluster(pools={pool_of(profile): {"profile": name or profile, "instances": 1,
                                                "cache": {"kv_capacity_tokens": 10**8},
                                                "scheduler": {"kind": kind}}})


def reference(p: ServingProfile, reqs: list[tuple[float, int, int]]) -> list[float]:
    """The legacy scheduler one engine step at a time: FIFO chunked prefill mixed with decoding; returns
    finish times. (SGLang's scheduler has its own reference in ``test_sim_scheduler.py``.)"""
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
        chunk, budget, done, q_in, q_pre = 0, p.chunked_prefill_tokens, [], 0.0, 0.0
        for item in prefill:
            take = min(item[1], budget - chunk)
            start = reqs[item[0]][1] - item[1]  # prompt tokens already prefilled (no cache reuse here)
            q_in += take * (take + 1) / 2  # causal attention pairs among the chunk's new tokens of this prompt
            q_pre += take * start  # and to the prompt's earlier chunks
            chunk += take
            if take == item[1]:
                done.append(item[0])
            item[1] -= take
            if chunk == budget:
                break
        ctx = sum(reqs[i][1] + g for i, g in dec.items())
        t += p.step_time(chunk, len(dec), ctx, prefill_pairs=q_in, prefix_pairs=q_pre)
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
def test_event_driven_matches_step_by_step_reference(profile: str, seed: int, tmp_path: Path) -> None:
    name = materialise(profile, tmp_path)
    rng = np.random.default_rng(seed)
    n = 25
    arrivals = np.sort(rng.uniform(0, 3.0, n))
    reqs = [(float(a), int(rng.integers(1, 12000)), int(rng.integers(1, 150))) for a in arrivals]
    cl = single(profile, name, kind="legacy")
    comps = []
    for k, (a, n_in, n_out) in enumerate(reqs):
        comps += cl.advance(a)
        cl.submit(Request(id=k, arrival=a, input_len=n_in, output_len=n_out), action(profile))
    comps += cl.drain()
    got = {c.request_id: c.finish for c in comps}
    want = reference(load_profile(name), reqs)
    assert len(got) == n
    np.testing.assert_allclose([got[k] for k in range(n)], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("n_in", [1024, 20000])
def test_idle_ttft_equals_profile_prefill_time(profile: str, n_in: int, tmp_path: Path) -> None:
    name = materialise(profile, tmp_path)
    cl = single(profile, name)
    cl.submit(Request(id=0, arrival=0.0, input_len=n_in, output_len=5), action(profile))
    (c,) = cl.drain()
    p = load_profile(name)
    assert c.ttft == pytest.approx(p.prefill_time(n_in), rel=1e-12)
    assert c.queue_time == 0.0


@pytest.mark.parametrize("profile", PROFILES)
def test_step_time_grows_with_batch_and_context(profile: str, tmp_path: Path) -> None:
    """TPOT of a batch of identical requests follows the profile's step time, rising in n and prompt length."""
    name = materialise(profile, tmp_path)
    p = load_profile(name)
    tpot = {}
    pool = pool_of(profile)
    for n in (1, 8, 32):
        for n_in in (100, 250):  # n * n_in <= one prefill chunk, so all start decoding together
            cl = single(profile, name)
            cl.pause(pool)  # queue the whole batch first, then start it in one step
            for k in range(n):
                cl.submit(Request(id=k, arrival=0.0, input_len=n_in, output_len=33), action(profile))
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


def test_admission_waits_for_kv_and_max_running() -> None:
    """Legacy scheduler: two requests that each need 60 % of the KV pool run one after the other."""
    cl = SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 1, "scheduler": {"kind": "legacy"},
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
    from rlroute.cluster.base import TAU

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


def moe_formula(raw: dict, p: int, d: int, c: int, q: float, s: float = 0.0) -> float:
    """The ``step_time_moe`` formula written out from the file's numbers (independent of the loader)."""
    blk = raw["step_time_moe"]
    co, e_num, k = blk["coeffs"], blk["num_experts"], blk["top_k"]
    return (co["a"] + co["b"] * p + co["c"] * d + co["d"] * c + co["e"] * e_num * (1 - (1 - k / e_num) ** (p + d))
            + co.get("f", 0.0) * q + co.get("g", co.get("f", 0.0)) * s)


@pytest.mark.parametrize("profile", [LARGE, "qwen3-30b-a3b__h100"])
@pytest.mark.parametrize(("n", "n_in"), [(1, 1000), (16, 300), (64, 100)])
def test_moe_profile_step_time_is_the_file_formula(profile: str, n: int, n_in: int) -> None:
    """Simulated prefill and decode steps of a MoE profile equal the step_time_moe formula of its file."""
    p = load_profile(profile)
    raw = yaml.safe_load(Path(p.path).read_text())
    assert p.ext is not None and p.ext.kind == "moe"
    assert p.step_time(0, n, n * 2048) == pytest.approx(moe_formula(raw, 0, n, n * 2048, 0.0), rel=1e-12)
    # idle prefill of a prompt longer than a chunk: the second chunk also attends to the first one's KV
    ch, extra = p.chunked_prefill_tokens, n_in
    want = moe_formula(raw, ch, 0, 0, ch * (ch + 1) / 2) + moe_formula(raw, extra, 0, 0, extra * (extra + 1) / 2, extra * ch)
    assert p.prefill_time(ch + extra) == pytest.approx(want, rel=1e-12)
    cl = single(profile)
    cl.pause("large")  # n prompts of n_in tokens prefilled together in one step, then decoded together
    for k in range(n):
        cl.submit(Request(id=k, arrival=0.0, input_len=n_in, output_len=17), Action.LARGE)
    cl.resume("large")
    comps = cl.drain()
    ttft = moe_formula(raw, n * n_in, 0, 0, n * n_in * (n_in + 1) / 2)
    tpot = sum(moe_formula(raw, 0, n, n * (n_in + 1 + j), 0.0) for j in range(16)) / 16
    for c in comps:
        assert c.ttft == pytest.approx(ttft, rel=1e-9)
        assert c.tpot == pytest.approx(tpot, rel=1e-9)
    # the MoE term saturates: the 64th sequence costs far less than the first
    assert p.step_time(0, 64, 0) - p.step_time(0, 63, 0) < 0.2 * (p.step_time(0, 1, 0) - p.step_time(0, 0, 0))
