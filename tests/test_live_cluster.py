"""LiveCluster against real emulated-worker processes on loopback (1 large + 2 small).

* the Gymnasium env runs an episode over the live pools (``gymnasium.make(..., cluster=live)``);
* sim and live, driven with the same requests and actions into the same state, give feature vectors that
  agree within stated tolerances;
* a worker killed mid-run: its requests are retried on the other instance, none is lost.
Every worker process is started and stopped (by PID) by the module fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest

import rlroute.env  # noqa: F401  (registers rlroute/Routing-v1)
from rlroute.cluster.live import LiveCluster
from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
from rlroute.types import Action, Completion, Request

# The default profiles (load_profile: measured > derived > estimate), as conf/cluster/default.yaml.
LARGE, SMALL = "qwen3-235b-a22b-fp8__h100x8", "qwen3-4b__h100"
SPEEDUP = 50.0
# Same instance model on both sides: KV share and eviction policy as the worker's flags.
MEM, EVICTION = 0.88, "lru"
WORKER_FLAGS = [f"mem_fraction_static={MEM}", f"cache.policy={EVICTION}", "block_size=64"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFleet]:
    specs = [WorkerSpec("large", LARGE, SPEEDUP, WORKER_FLAGS)] + [
        WorkerSpec("small", SMALL, SPEEDUP, WORKER_FLAGS) for _ in range(2)]
    with WorkerFleet(specs, tmp_path_factory.mktemp("workers")) as f:
        yield f


def pools_cfg(fleet: WorkerFleet) -> dict[str, dict[str, object]]:
    return {p: {"urls": fleet.urls(p), "profile": prof, "in_pool": {"policy": "cache_aware"}}
            for p, prof in (("large", LARGE), ("small", SMALL))}


@pytest.fixture
def live(fleet: WorkerFleet) -> Iterator[LiveCluster]:
    with LiveCluster(pools_cfg(fleet), speedup=SPEEDUP) as c:
        c.reset()  # flush caches left by an earlier test
        yield c


@pytest.fixture(scope="module")
def episode(fleet: WorkerFleet) -> list[Completion]:
    """One 48-decision episode of the env over the live workers (random actions); its completions."""
    from rlroute.features import SCHEMA

    with LiveCluster(pools_cfg(fleet), speedup=SPEEDUP) as live:
        env = gymnasium.make("rlroute/Routing-v1", cluster=live, episode_length=48)
        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(3)
        completions: list[Completion] = []
        steps, done = 0, False
        while not done:
            assert obs.shape == (224,) and obs.dtype == np.float32 and np.isfinite(obs).all()
            assert (obs >= SCHEMA.low - 1e-6).all() and (obs <= SCHEMA.high + 1e-6).all()
            obs, reward, term, trunc, info = env.step(int(rng.integers(3)))
            assert np.isfinite(reward)
            completions += info["completions"]
            steps += 1
            done = term or trunc
        completions += env.unwrapped.drain()
        env.close()
    assert steps == 48
    return completions


def test_env_episode_over_live_workers(episode: list[Completion]) -> None:
    assert len(episode) == 48, "every routed request gets exactly one completion"
    assert not [c for c in episode if c.failed], [c.fail_reason for c in episode if c.failed]
    assert {c.action for c in episode} == set(Action)
    assert all(c.output_tokens > 0 and c.cost > 0 and c.prompt_tokens > 0 for c in episode)
    hybrids = [c for c in episode if c.action == Action.HYBRID]
    assert all(c.pools == ("large", "small") for c in hybrids)


def test_live_latencies_are_causal(episode: list[Completion]) -> None:
    assert all(c.e2e > 0 and 0 <= c.ttft <= c.e2e for c in episode), [
        (c.request_id, c.ttft, c.e2e) for c in episode if not (c.e2e > 0 and 0 <= c.ttft <= c.e2e)]


def _requests() -> list[Request]:
    """Three shared 'documents' (8 blocks of 64 tokens) asked about in turns, 1 s apart."""
    reqs = []
    for i in range(18):
        doc = i % 3
        own = 3 + i // 3  # later turns carry more of their own context
        blocks = tuple(1000 * (doc + 1) + k for k in range(8)) + tuple(10_000 + 100 * i + k for k in range(own))
        reqs.append(Request(id=i, arrival=1.0 * i, input_len=64 * len(blocks) - 20, output_len=24 + 4 * doc,
                            blocks=blocks, block_size=64))
    return reqs


def test_sim_and_live_in_the_same_state_give_the_same_features(live: LiveCluster) -> None:
    """Same requests, same actions, same instance model: features agree within the stated tolerances.

    Tolerances (absolute, on the normalised features): request block exact (same request); cache block
    0.05 (prefix matches and cache sizes come from the router's estimate vs the simulator's real cache, hit
    rates from scraped counters); system block 0.10 (latency EWMAs: the worker executes engine steps at
    wall-clock ticks of ``min_tick_s`` x speedup modelled seconds and arrivals jitter with HTTP timing).
    """
    from rlroute.cluster.sim import SimCluster
    from rlroute.features import SCHEMA, extract

    sim = SimCluster(pools={p: {"profile": prof, "instances": n, "cache": {"mem_fraction_static": MEM,
                                                                           "eviction": EVICTION},
                                "in_pool": {"policy": "cache_aware"}}
                            for p, prof, n in (("large", LARGE, 1), ("small", SMALL, 2))}, seed=0)
    reqs = _requests()
    for r in reqs:
        a = Action(r.id % 3)
        sim.submit(r, a)
        live.submit(r, a)
    done_sim, done_live = sim.drain(), live.drain()
    assert len(done_sim) == len(done_live) == len(reqs) and not [c for c in done_live if c.failed]
    t = max(sim.now, live.now) + 5.0
    sim.advance(t)
    live.advance(t)
    live.scrape(force=True)
    probe = Request(id=99, arrival=t, input_len=64 * 10, output_len=16,
                    blocks=tuple(1000 + k for k in range(8)) + (77, 78), block_size=64)
    m_sim, m_live = sim.prefix_match(probe), live.prefix_match(probe)
    assert m_sim == m_live, "router-side prefix estimate should equal the simulator's cache (no eviction here)"
    f_sim = extract(probe, sim.state(), m_sim)
    f_live = extract(probe, live.state(), m_live)
    diff = np.abs(f_sim - f_live)
    blocks = SCHEMA.slices
    worst = {b: (float(diff[s].max()), SCHEMA.names[s.start + int(diff[s].argmax())]) for b, s in blocks.items()}
    assert worst["request"][0] == 0.0, worst
    assert worst["cache"][0] <= 0.05, worst
    assert worst["system"][0] <= 0.10, worst
    # Per-request agreement: the worker's cached tokens equal the simulator's for every request.
    cached_sim = {c.request_id: c.cached_tokens for c in done_sim}
    cached_live = {c.request_id: c.cached_tokens for c in done_live}
    assert cached_sim == cached_live


def test_killed_worker_loses_no_request(fleet: WorkerFleet) -> None:
    """Kill one small worker while requests are in flight: retried on the other one, nothing lost."""
    with LiveCluster(pools_cfg(fleet), speedup=SPEEDUP, max_retries=2) as c:
        c.reset()
        small = [i for i, w in enumerate(fleet.workers) if w.spec.pool == "small"]
        reqs = [Request(id=i, arrival=0.05 * i, input_len=300, output_len=200, blocks=(i,), block_size=64)
                for i in range(24)]
        for r in reqs[:12]:
            c.submit(r, Action.SMALL)
        fleet.kill(small[0])
        for r in reqs[12:]:
            c.submit(r, Action.SMALL)
        done = c.drain()
    fleet.restart(small[0])
    assert sorted(x.request_id for x in done) == list(range(24))
    assert not [x for x in done if x.failed], [x.fail_reason for x in done if x.failed]
    assert sum(x.retries for x in done) >= 1


def test_paused_pool_is_seen_and_refused_by_the_guard(live: LiveCluster) -> None:
    """/pause_generation on the workers shows in the scraped state; the ONNX guard refuses that pool."""
    from rlroute.policies.onnx import guard

    live.pause("small")
    try:
        live.scrape(force=True)
        state = live.state()
        assert all(i.paused for i in state.pools["small"].instances) and not state.pools["small"].available
        assert state.pools["large"].available
        prefers_small = np.array([0.0, 5.0, 1.0], dtype=np.float32)
        assert guard(prefers_small, None, state).reason == "pool_unavailable"
        assert guard(np.array([5.0, 1.0, 0.0], dtype=np.float32), None, state).reason is None
    finally:
        live.resume("small")
    live.scrape(force=True)
    assert live.state().pools["small"].available
