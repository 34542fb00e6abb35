"""LiveCluster against real emulated-worker processes on loopback (1 large + 2 small).

* the Gymnasium env runs an episode over the live pools (``gymnasium.make(..., cluster=live)``);
* sim and live, driven with the same requests and actions into the same state, give feature vectors that
  agree within stated tolerances;
* a worker killed mid-run: its requests are retried on the other instance, none is lost.
Every worker process is started and stopped (by PID) by the module fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
    return {p: {"urls": fleet.urls(p), "profile": prof, "in_pool": {"_target_": "rlroute.cluster.inpool.CacheAware"}}
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


DOCS = tuple(f"Document {d}: " + " ".join(f"fact-{d}-{k} about topic {d}" for k in range(130)) for d in range(3))


def _texts() -> list[str]:
    """Three shared 'documents' (~8 blocks of 64 tokens) asked about in turns, 4 s apart (80 ms of wall time
    at SPEEDUP 50: the requests must reach the workers in order, also on a loaded machine)."""
    return [DOCS[i % 3] + f"\nQuestion {i}: " + " ".join(f"detail {i}-{k}" for k in range(40 + 12 * (i // 3)))
            for i in range(18)]


def _request(i: int, text: str, arrival: float, max_new: int) -> Request:
    """The request as the router builds it from a ``/generate`` body (bytes of the text, no tokenizer)."""
    from rlroute.worker.tokens import count_tokens, text_blocks

    return Request(id=i, arrival=arrival, input_len=count_tokens(text), output_len=max_new,
                   blocks=text_blocks(text, 64), block_size=64, prompt=text, max_new_tokens=max_new)


def _sim() -> object:
    from rlroute.cluster.sim import SimCluster

    return SimCluster(pools={p: {"profile": prof, "instances": n, "cache": {"mem_fraction_static": MEM,
                                                                            "eviction": EVICTION},
                                 "in_pool": {"_target_": "rlroute.cluster.inpool.CacheAware"}}
                             for p, prof, n in (("large", LARGE, 1), ("small", SMALL, 2))}, seed=0)


def _drive_live_cluster(fleet: WorkerFleet, reqs: list[Request], actions: list[Action],
                        probe: Request) -> tuple[list[Completion], float, float, np.ndarray, dict[str, list[int]]]:
    """Send through LiveCluster; returns completions, the probe's time, day offset, observation and matches."""
    from rlroute.features import extract

    with LiveCluster(pools_cfg(fleet), speedup=SPEEDUP) as live:
        live.reset()
        for r, a in zip(reqs, actions, strict=True):
            live.submit(r, a)
        done = live.drain()
        live.advance(max(live.now, reqs[-1].arrival) + 5.0)
        live.scrape(force=True)
        state, matches = live.state(), live.prefix_match(probe)
        return done, state.time, state.day_offset, extract(probe, state, matches), matches


def _drive_router(fleet: WorkerFleet, reqs: list[Request], actions: list[Action], probe: Request,
                  tmp: Path) -> tuple[list[Completion], float, float, np.ndarray, dict[str, list[int]]]:
    """Send through ``rlroute serve`` over HTTP (actions forced with the admin token); the probe's observation
    is the one the running router computes (``/admin/observe``)."""
    import asyncio

    import httpx

    from rlroute.serve.launch import RouterProc

    for url in fleet.urls("large") + fleet.urls("small"):
        httpx.post(url + "/flush_cache", timeout=10.0).raise_for_status()
    auth = {"authorization": "Bearer parity-test"}
    with RouterProc(fleet.urls("large"), fleet.urls("small"), tmp / "router.log",
                    [f"speedup={SPEEDUP}", "scrape_interval_s=0.02"],
                    env={"RLROUTE_ADMIN_TOKEN": "parity-test"}) as router:
        def observe(r: Request) -> dict[str, object]:
            body = {"request": {"text": r.prompt, "sampling_params": {"max_new_tokens": r.max_new_tokens}}}
            out = httpx.post(router.admin_url + "/admin/observe", json=body, headers=auth, timeout=10.0)
            out.raise_for_status()
            return dict(out.json())

        t_base = float(observe(probe)["time"])  # type: ignore[arg-type]

        async def send() -> list[dict[str, object]]:
            async with httpx.AsyncClient(timeout=60.0) as client:
                async def one(r: Request, a: Action) -> dict[str, object]:
                    await asyncio.sleep(r.arrival / SPEEDUP)
                    body = {"text": r.prompt, "sampling_params": {"max_new_tokens": r.max_new_tokens}}
                    resp = await client.post(router.url + "/generate", json=body,
                                             headers={**auth, "x-rlroute-force-action": a.name.lower()})
                    resp.raise_for_status()
                    return {**resp.json()["meta_info"], "id": r.id, "action": a}

                return await asyncio.gather(*(one(r, a) for r, a in zip(reqs, actions, strict=True)))

        answers = asyncio.run(send())
        import time

        time.sleep(5.0 / SPEEDUP + 0.3)  # 5 modelled seconds, and a few scrapes
        seen = observe(probe)
    done = [Completion(request_id=int(str(a["id"])), action=a["action"], arrival=0.0, finish=0.0,  # type: ignore[arg-type]
                       queue_time=0.0, ttft=0.0, tpot=0.0, e2e=0.0, prompt_tokens=int(str(a["prompt_tokens"])),
                       cached_tokens=int(str(a["cached_tokens"])), output_tokens=int(str(a["completion_tokens"])),
                       cost=0.0, quality_ok=None, pools=(), instances=())
            for a in answers]
    obs = np.array(seen["observation"], dtype=np.float32)
    return done, float(seen["time"]) - t_base, float(seen["day_offset"]) + t_base, obs, seen["matches"]  # type: ignore[return-value,arg-type]


@pytest.mark.parametrize("user", ["live_cluster", "router"])
def test_sim_and_live_in_the_same_state_give_the_same_features(fleet: WorkerFleet, user: str,
                                                                tmp_path: Path) -> None:
    """Same requests, same actions, same instance model: features agree within the stated tolerances, for
    both users of the live state keeper (the live env's ``LiveCluster`` and the ``rlroute serve`` router).

    Tolerances (absolute, on the normalised features): request block exact (same request); cache block
    0.05 (prefix matches and cache sizes come from the router's estimate vs the simulator's real cache, hit
    rates from scraped counters); system block 0.10 (latency EWMAs: the worker executes engine steps at
    wall-clock ticks of ``min_tick_s`` x speedup modelled seconds and arrivals jitter with HTTP timing).
    The router is driven with large and small only: its hybrid plan prompt is real text (a plan request),
    which the simulator models as ``plan_tokens`` more prompt tokens, so caches would differ by design.
    """
    from rlroute.features import SCHEMA, extract

    texts = _texts()
    reqs = [_request(i, t, 4.0 * i, 24 + 4 * (i % 3)) for i, t in enumerate(texts)]
    kinds = 3 if user == "live_cluster" else 2
    actions = [Action(i % kinds) for i in range(len(reqs))]
    probe = _request(99, DOCS[0] + "\nQuestion 99: what else?", 0.0, 16)
    if user == "live_cluster":
        done_live, t, day, f_live, m_live = _drive_live_cluster(fleet, reqs, actions, probe)
    else:
        done_live, t, day, f_live, m_live = _drive_router(fleet, reqs, actions, probe, tmp_path)
    sim = _sim()
    for r, a in zip(reqs, actions, strict=True):
        sim.submit(r, a)  # type: ignore[attr-defined]
    done_sim = sim.drain()  # type: ignore[attr-defined]
    assert len(done_sim) == len(done_live) == len(reqs) and not [c for c in done_live if c.failed]
    sim.day_offset = day  # type: ignore[attr-defined]  # live time of day follows the wall clock: align
    sim.advance(t)  # type: ignore[attr-defined]
    m_sim = sim.prefix_match(probe)  # type: ignore[attr-defined]
    assert m_sim == m_live, "router-side prefix estimate should equal the simulator's cache (no eviction here)"
    f_sim = extract(probe, sim.state(), m_sim)  # type: ignore[attr-defined]
    diff = np.abs(f_sim - f_live)
    worst = {b: (float(diff[s].max()), SCHEMA.names[s.start + int(diff[s].argmax())])
             for b, s in SCHEMA.slices.items()}
    assert worst["request"][0] == 0.0, worst
    assert worst["cache"][0] <= 0.05, worst
    assert worst["system"][0] <= 0.10, worst
    rate = SCHEMA.names.index("system.arrival_rate")
    assert f_live[rate] > 0.0, "the live arrival rate must be populated"
    # Per-request agreement: the worker's cached tokens equal the simulator's for every request.
    cached_sim = {c.request_id: c.cached_tokens for c in done_sim}
    cached_live = {c.request_id: c.cached_tokens for c in done_live}
    assert cached_sim == cached_live


def test_prepared_prompts_are_not_encoded_at_send_time(live: LiveCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prepare`` encodes each prompt before the clock reaches it; the sends then encode only a hybrid's plan
    stage (extra tokens), and the workers still see the requests' prefix structure (a repeated prefix hits)."""
    import rlroute.cluster.live.cluster as lc

    calls: list[tuple[int, int]] = []
    real = lc.prompt_field

    def counted(r: Request, extra_tokens: int = 0) -> bytes:
        calls.append((r.id, extra_tokens))
        return real(r, extra_tokens)

    monkeypatch.setattr(lc, "prompt_field", counted)
    reqs = [Request(id=i, arrival=2.0 * i, input_len=640, output_len=16, blocks=tuple(range(10)), block_size=64)
            for i in range(4)]
    actions = [Action.SMALL, Action.SMALL, Action.LARGE, Action.HYBRID]
    live.prepare(reqs)
    assert calls == [(r.id, 0) for r in reqs]
    calls.clear()
    for r, a in zip(reqs, actions, strict=True):
        live.submit(r, a)
    done = {c.request_id: c for c in live.drain()}
    assert all(not c.failed for c in done.values()) and len(done) == 4
    assert all(extra > 0 for _, extra in calls), f"a prepared prompt was encoded again at send time: {calls}"
    assert done[0].prompt_tokens == 640 and done[0].cached_tokens == 0
    assert done[1].cached_tokens > 0  # same blocks, sent 2 s after the first finished: cache_aware finds them
    assert live._prepared == {}, "prepared prompts are dropped when their job ends"


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


def test_live_cluster_sends_the_cap_and_the_next_turn_hits_its_answer(live: LiveCluster) -> None:
    """``max_new_tokens`` is the client's cap (2048) while the reply ends at its true length (100), and the
    answer enters the worker's cache at finish: turn 2 (turn 1's 3 blocks + the answer's block + a new one)
    hits 4 blocks over HTTP, as in the simulator."""
    one = Request(id=0, arrival=0.0, input_len=192, output_len=100, blocks=(71, 72, 73), block_size=64,
                  max_new_tokens=2048, output_blocks=(74,))
    two = Request(id=1, arrival=60.0, input_len=320, output_len=5, blocks=(71, 72, 73, 74, 75), block_size=64,
                  max_new_tokens=64)
    got = []
    for r in (one, two):
        live.submit(r, Action.LARGE)
        got += live.drain()
    assert [c.output_tokens for c in got] == [100, 5]
    assert got[1].cached_tokens == 4 * 64, got
    sim, done = _sim(), []
    for r in (one, two):
        done += sim.advance(r.arrival)  # type: ignore[attr-defined]
        sim.submit(r, Action.LARGE)  # type: ignore[attr-defined]
    done = sorted(done + sim.drain(), key=lambda c: c.request_id)  # type: ignore[attr-defined]
    assert [c.cached_tokens for c in done] == [c.cached_tokens for c in got]
