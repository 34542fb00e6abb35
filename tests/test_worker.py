"""The emulated SGLang worker: endpoints and JSON shapes, streaming, prefix cache, pause, faults, bad input.

One real worker process on loopback (``rlroute worker``), stopped by PID at the end; plus engine tests
in-process on the simulator's instance model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
from rlroute.cluster.live.scrape import parse_metrics
from rlroute.worker.engine import Engine
from rlroute.worker.model import build_instance_model
from rlroute.worker.tokens import count_tokens, text_blocks

SMALL = "qwen3-4b__h100"


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    fleet = WorkerFleet([WorkerSpec("small", SMALL, speedup=200.0)], tmp_path_factory.mktemp("worker"))
    fleet.start()
    try:
        yield fleet.workers[0].url
    finally:
        fleet.stop()


def _post(url: str, path: str, body: object) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=30)


def _sse(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]


def test_generate_shape_and_prefix_cache(worker: str) -> None:
    prompt = "The quick brown fox jumps over the lazy dog. " * 40
    first = _post(worker, "/generate", {"text": prompt, "sampling_params": {"max_new_tokens": 5}}).json()
    meta = first["meta_info"]
    assert meta["prompt_tokens"] == count_tokens(prompt)
    assert meta["completion_tokens"] == 5 and len(first["text"].split()) == 5
    assert meta["finish_reason"] == {"type": "length", "length": 5}
    assert meta["e2e_latency"] > 0 and meta["cached_tokens"] == 0
    again = _post(worker, "/generate", {"text": prompt, "sampling_params": {"max_new_tokens": 5}}).json()
    # every full block of the prompt is cached the second time
    assert again["meta_info"]["cached_tokens"] == len(text_blocks(prompt)) * 64
    ids = _post(worker, "/generate", {"input_ids": list(range(300)), "sampling_params": {"max_new_tokens": 2}}).json()
    assert ids["meta_info"]["prompt_tokens"] == 300


@pytest.mark.parametrize("path,body", [
    ("/generate", {"text": "hello there", "sampling_params": {"max_new_tokens": 4}, "stream": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 4, "stream": True}),
])
def test_streaming_ends_with_done(worker: str, path: str, body: dict[str, object]) -> None:
    r = _post(worker, path, body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _sse(r.text)
    assert events[-1] == "[DONE]" and len(events) >= 2
    last = json.loads(events[-2])
    if path == "/generate":  # SGLang's native stream carries the cumulative text
        assert last["meta_info"]["completion_tokens"] == 4 and len(last["text"].split()) == 4
    else:  # OpenAI deltas add up to the whole answer
        assert last["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("path", ["/health", "/health_generate", "/get_load", "/get_server_info", "/get_model_info"])
def test_get_endpoints(worker: str, path: str) -> None:
    assert httpx.get(worker + path, timeout=10).status_code == 200


def test_metrics_parse_into_typed_stats(worker: str) -> None:
    text = httpx.get(worker + "/metrics", timeout=10).text
    for name in ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage", "sglang:cache_hit_rate"):
        assert name in text
    stats = parse_metrics(text)
    assert stats.kv_capacity_tokens > 0 and stats.prompt_tokens_total > 0


def test_pause_holds_requests_until_continue(worker: str) -> None:
    async def run() -> tuple[int, float]:
        async with httpx.AsyncClient(timeout=30) as c:
            assert (await c.post(worker + "/pause_generation")).json()["success"]
            task = asyncio.create_task(c.post(worker + "/generate", json={"text": "held", "sampling_params": {"max_new_tokens": 3}}))
            await asyncio.sleep(0.3)
            load = (await c.get(worker + "/get_load")).json()
            assert not task.done()
            await c.post(worker + "/continue_generation")
            r = await task
            return r.status_code, load["num_waiting_reqs"]

    status, waiting = asyncio.run(run())
    assert status == 200 and waiting >= 1


LONG = 30000  # tokens: ~1 s of wall time at speed-up 200, still running when the pause comes


@pytest.mark.parametrize("mode", ["in_place", "retract", "abort"])
def test_pause_modes_follow_sglang(worker: str, mode: str) -> None:
    """``in_place`` keeps the running batch (flush refused, 400), ``retract`` queues it again (flush allowed,
    the answer still whole after continue), ``abort`` ends it with ``finish_reason: abort``."""
    async def run() -> tuple[httpx.Response, dict[str, object], int, dict[str, object]]:
        async with httpx.AsyncClient(timeout=60) as c:
            body = {"text": f"running {mode}", "sampling_params": {"max_new_tokens": LONG}}
            task = asyncio.create_task(c.post(worker + "/generate", json=body))
            await asyncio.sleep(0.15)
            paused = (await c.post(worker + "/pause_generation", json={"mode": mode})).json()
            load = (await c.get(worker + "/get_load")).json()
            flush = (await c.post(worker + "/flush_cache")).status_code
            await c.post(worker + "/continue_generation")
            return await task, paused, flush, load

    answer, paused, flush, load = asyncio.run(run())
    meta = answer.json()["meta_info"]
    if mode == "in_place":
        assert flush == 400 and load["num_running_reqs"] == 1 and meta["completion_tokens"] == LONG
    elif mode == "retract":
        assert paused["requests"] == 1 and load["num_running_reqs"] == 0 and load["num_waiting_reqs"] == 1
        assert flush == 200 and meta["completion_tokens"] == LONG and meta["finish_reason"]["type"] == "length"
    else:
        assert paused["requests"] == 1 and meta["finish_reason"]["type"] == "abort" and meta["completion_tokens"] < LONG
    assert _post(worker, "/pause_generation", {"mode": "sideways"}).status_code == 400


def test_flush_and_update_weights(worker: str) -> None:
    prompt = "flush me " * 200
    _post(worker, "/generate", {"text": prompt, "sampling_params": {"max_new_tokens": 1}})
    assert httpx.post(worker + "/flush_cache", timeout=10).status_code == 200
    after = _post(worker, "/generate", {"text": prompt, "sampling_params": {"max_new_tokens": 1}}).json()
    assert after["meta_info"]["cached_tokens"] == 0
    r = _post(worker, "/update_weights_from_disk", {"model_path": "/ckpt/v2", "weight_version": "v2"})
    assert r.json()["success"]
    info = httpx.get(worker + "/get_server_info", timeout=10).json()
    assert info["rlroute"]["weight_version"] == "v2" and not info["rlroute"]["paused"]


def test_fault_knobs(worker: str) -> None:
    try:
        assert _post(worker, "/rlroute/faults", {"fail_first": 2, "status_code": 503}).status_code == 200
        codes = [_post(worker, "/generate", {"text": "x"}).status_code for _ in range(3)]
        assert codes == [503, 503, 200]
        _post(worker, "/rlroute/faults", {"health_status": 500})
        assert httpx.get(worker + "/health", timeout=10).status_code == 500
        assert _post(worker, "/rlroute/faults", {"error_rate": 2.0}).status_code == 400
        assert _post(worker, "/rlroute/faults", {"no_such_knob": 1}).status_code == 400
    finally:
        _post(worker, "/rlroute/faults", {"fail_first": 0, "health_status": 200, "status_code": 500})


@pytest.mark.parametrize("body", [
    {"sampling_params": {"max_new_tokens": 1}},  # neither text nor input_ids
    {"text": "a", "input_ids": [1]},  # both
    {"text": 5},
    {"text": "a", "sampling_params": {"max_new_tokens": -1}},
    {"text": "a", "sampling_params": {"max_new_tokens": 10**9}},
    {"input_ids": [-3]},
    {"text": "a", "sampling_params": {"max_new_tokens": 30000}, "extra": 1, "input_ids": None},
])
def test_bad_generate_is_4xx(worker: str, body: dict[str, object]) -> None:
    r = _post(worker, "/generate", body)
    if body.get("sampling_params", {}).get("max_new_tokens") == 30000:  # type: ignore[union-attr]
        assert r.status_code == 200  # within limits and KV capacity: served
    else:
        assert 400 <= r.status_code < 500, r.text


def test_malformed_json_is_4xx(worker: str) -> None:
    r = httpx.post(worker + "/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_engine_prefill_and_batching_follow_the_profile() -> None:
    async def run() -> tuple[float, float, int]:
        model = build_instance_model(SMALL, {"policy": "lru"}, 0.88, 64)
        engine = Engine(model, speedup=100.0)
        engine.start()
        try:
            jobs = []
            for blocks, n in (((), 10), (tuple(range(1, 65)), 64 * 64)):  # one after the other: no batching
                job = engine.submit(blocks, n, 4)
                while (await job.events.get())[0] != "done":
                    pass
                jobs.append(job)
            short, long = jobs
            assert short.first_token is not None and long.first_token is not None
            return short.first_token - short.arrival, long.first_token - long.arrival, long.cached_tokens
        finally:
            await engine.stop()

    ttft_short, ttft_long, cached = asyncio.run(run())
    from rlroute.cluster.profiles import load_profile

    prof = load_profile(SMALL)
    # Modelled TTFT difference = the extra prefill tokens' cost (in chunks of chunked_prefill_tokens).
    assert ttft_long - ttft_short == pytest.approx(prof.prefill_time(4096) - prof.prefill_time(10), rel=0.05)
    assert cached == 0


def test_kv_capacity_refusal(worker: str) -> None:
    cap = httpx.get(worker + "/get_server_info", timeout=10).json()["max_total_num_tokens"]
    r = _post(worker, "/generate", {"input_ids": [1] * 200_000, "sampling_params": {"max_new_tokens": 32768}})
    assert (r.status_code == 400) == (cap < 200_000 + 32768)


def test_worker_cli_config_is_valid(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from rlroute.paths import CONF_DIR
    from rlroute.worker.cli import build_state

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("worker", overrides=["speedup=10", "faults.fail_first=1"])
    state = build_state(cfg)
    assert state.engine.speedup == 10 and state.faults.fail_first == 1


def _clocked_engine(profile: str) -> tuple[Engine, list[float]]:
    """An engine on a hand-driven wall clock (speedup 1: wall seconds = modelled seconds)."""
    t = [0.0]
    return Engine(build_instance_model(profile, {"policy": "lru"}, 0.88, 64), clock=lambda: t[0]), t


def _run_until_done(engine: Engine, *jobs: object) -> None:
    for _ in range(100_000):
        if all(getattr(j, "finish", None) is not None for j in jobs):
            return
        engine._step()
    raise AssertionError("engine did not finish the jobs")


def test_engine_admission_is_causal_when_the_loop_lags() -> None:
    """A request submitted while the loop still replays older steps joins only a step starting after it."""
    engine, t = _clocked_engine(SMALL)
    first = engine.submit((), 5000, 50)
    t[0] = 0.5  # the loop has not run yet: every step from 0 to ~0.5 s is still to be replayed
    late = engine.submit((), 100, 4)
    _run_until_done(engine, first, late)
    assert late.arrival == 0.5
    assert late.first_token is not None and late.finish is not None
    assert late.arrival < late.first_token <= late.finish
    # Its prefill step started at or after its arrival: TTFT is at least one prefill step of its prompt.
    assert late.first_token - late.arrival >= engine.model.step_time(100, 0, 0)


def test_engine_prices_prefill_like_the_simulator() -> None:
    """Same two requests (multi-chunk prompt, then one reusing part of it) through the engine and SimCluster
    on the measured profile with attention terms: identical TTFT, e2e and cached tokens."""
    from rlroute.cluster.sim import SimCluster
    from rlroute.types import Action, Request

    reqs = [Request(id=0, arrival=0.0, input_len=64 * 300, output_len=8, blocks=tuple(range(1, 301)), block_size=64),
            Request(id=1, arrival=50.0, input_len=64 * 350, output_len=8,
                    blocks=tuple(range(1, 201)) + tuple(range(1001, 1151)), block_size=64)]
    sim = SimCluster(pools={p: {"profile": prof, "instances": 1, "cache": {"mem_fraction_static": 0.88, "eviction": "lru"}}
                            for p, prof in (("large", "qwen3-235b-a22b-fp8__h100x8"), ("small", SMALL))}, seed=0)
    for r in reqs:
        sim.submit(r, Action.SMALL)
    done = {c.request_id: c for c in sim.drain()}
    engine, t = _clocked_engine(SMALL)
    assert engine.model.chunked_prefill_tokens < reqs[0].input_len  # several chunks: prefix pairs matter
    for r in reqs:
        t[0] = r.arrival
        job = engine.submit(r.blocks, r.input_len, r.output_len)
        _run_until_done(engine, job)
        assert job.first_token is not None and job.finish is not None
        c = done[r.id]
        assert job.cached_tokens == c.cached_tokens
        assert job.first_token - job.arrival == pytest.approx(c.ttft, rel=1e-9)
        assert job.finish - job.arrival == pytest.approx(c.e2e, rel=1e-9)


def test_engine_hold_keeps_arrival_order_and_time() -> None:
    """A request held while its body is parsed keeps its arrival time and goes before later arrivals."""
    engine, t = _clocked_engine(SMALL)
    hold = engine.hold()
    t[0] = 0.2  # parsing + tokenizing the long prompt took (modelled) time; a short request came meanwhile
    short = engine.submit((), 100, 4)
    long = engine.submit((), 9000, 4, hold=hold)
    assert long.arrival == 0.0 and short.arrival == 0.2
    assert list(engine.waiting) == [long, short]
    engine.release(hold)  # idempotent after submit
    _run_until_done(engine, long, short)
    assert long.first_token is not None and short.first_token is not None
    from rlroute.cluster.profiles import load_profile

    assert long.first_token - long.arrival == pytest.approx(load_profile(SMALL).prefill_time(9000))
    assert short.first_token > long.first_token  # FIFO: the short one waited behind the long prefill


@pytest.mark.parametrize("mixed", [False, True])
def test_engine_runs_the_simulators_scheduler(mixed: bool) -> None:
    """The retraction scenario of tests/test_sim_scheduler.py (KV 900: B retracted at decode step 350 and
    recomputed) through the engine and through SimCluster: the same first-token and finish times."""
    from rlroute.cluster.profiles import load_profile
    from rlroute.cluster.sim import SimCluster
    from rlroute.cluster.sim.prefix_cache import PrefixCache
    from rlroute.cluster.sim.scheduler import parse_scheduler
    from rlroute.types import Action, Request
    from rlroute.worker.model import InstanceModel

    est = "qwen3-4b__h100.estimate"
    reqs = [(100, 400), (10, 2), (100, 400)]
    sim = SimCluster(pools={"small": {"profile": est, "instances": 1, "scheduler": {"mixed_chunk": mixed},
                                      "cache": {"kv_capacity_tokens": 900}}})
    sim.pause("small")
    for i, (n_in, n_out) in enumerate(reqs):
        sim.submit(Request(id=i, arrival=0.0, input_len=n_in, output_len=n_out, max_new_tokens=n_out), Action.SMALL)
    sim.resume("small")
    done = {c.request_id: c for c in sim.drain()}
    assert sum(1 for _ in done) == 3
    t = [0.0]
    model = InstanceModel(load_profile(est), PrefixCache(block_size=64), 64, 900,
                          parse_scheduler({"mixed_chunk": mixed}, "worker.scheduler"))
    engine = Engine(model, clock=lambda: t[0])
    engine.pause()
    jobs = [engine.submit((), n_in, n_out) for n_in, n_out in reqs]
    engine.resume()
    _run_until_done(engine, *jobs)
    for i, job in enumerate(jobs):
        assert job.first_token is not None and job.finish is not None
        assert job.first_token == pytest.approx(done[i].ttft, rel=1e-12)
        assert job.finish == pytest.approx(done[i].finish, rel=1e-12)
        assert job.generated == reqs[i][1]
    assert not engine.inst.waiting
    if not mixed:
        assert engine.inst.retracted_total == 1  # type: ignore[attr-defined]


def test_output_tokens_header_ends_the_reply_before_the_cap(worker: str) -> None:
    """The reply ends where the header says (the emulated EOS), ``max_new_tokens`` stays the cap."""
    from rlroute.worker.tokens import OUTPUT_TOKENS_HEADER

    body = {"text": "stop early please " * 20, "sampling_params": {"max_new_tokens": 40}}
    early = httpx.post(worker + "/generate", json=body, headers={OUTPUT_TOKENS_HEADER: "7"}, timeout=30).json()
    assert early["meta_info"]["completion_tokens"] == 7 and early["meta_info"]["finish_reason"] == {"type": "stop"}
    full = _post(worker, "/generate", body).json()
    assert full["meta_info"]["completion_tokens"] == 40
    assert full["meta_info"]["finish_reason"] == {"type": "length", "length": 40}
    beyond = httpx.post(worker + "/generate", json=body, headers={OUTPUT_TOKENS_HEADER: "90"}, timeout=30).json()
    assert beyond["meta_info"]["completion_tokens"] == 40  # never past the cap
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
    r = httpx.post(worker + "/v1/chat/completions", json=chat, headers={OUTPUT_TOKENS_HEADER: "3"}, timeout=30).json()
    assert r["usage"]["completion_tokens"] == 3 and r["choices"][0]["finish_reason"] == "stop"
    bad = httpx.post(worker + "/generate", json=body, headers={OUTPUT_TOKENS_HEADER: "zero"}, timeout=30)
    assert bad.status_code == 400 and OUTPUT_TOKENS_HEADER in bad.text
    # the instance model reserves from the cap (SGLang's admission) and generates up to the early end
    engine, _ = _clocked_engine(SMALL)
    job = engine.submit((), 100, 40, output_tokens=7)
    assert (job.req.max_new_tokens, job.req.output_len) == (40, 7)


def test_answer_enters_the_prefix_cache_for_the_next_turn(worker: str) -> None:
    """Turn 2 carries turn 1's 3 prompt blocks + its 2 answer blocks: with the answer's blocks in the header,
    the worker caches the answer at finish and turn 2 hits 5 blocks; without it, only the 3 prompt blocks."""
    from rlroute.worker.tokens import (
        OUTPUT_BLOCKS_HEADER,
        OUTPUT_TOKENS_HEADER,
        block_ids,
        output_blocks_header,
    )

    for base, header in ((1000, True), (2000, False)):
        assert httpx.post(worker + "/flush_cache", timeout=10).status_code == 200
        prompt, answer = (base + 1, base + 2, base + 3), (base + 4, base + 5)
        headers = {OUTPUT_TOKENS_HEADER: "130"}
        if header:
            headers[OUTPUT_BLOCKS_HEADER] = output_blocks_header(answer, 64)
        one = {"input_ids": block_ids(prompt, 64).tolist(), "sampling_params": {"max_new_tokens": 512}}
        first = httpx.post(worker + "/generate", json=one, headers=headers, timeout=30).json()
        assert first["meta_info"]["completion_tokens"] == 130
        two = {"input_ids": block_ids((*prompt, *answer, base + 6), 64).tolist(), "sampling_params": {"max_new_tokens": 4}}
        second = _post(worker, "/generate", two).json()
        assert second["meta_info"]["cached_tokens"] == (5 if header else 3) * 64, (header, second["meta_info"])
    bad = httpx.post(worker + "/generate", json=one, headers={OUTPUT_BLOCKS_HEADER: "64:a,b"}, timeout=30)
    assert bad.status_code == 400 and OUTPUT_BLOCKS_HEADER in bad.text


def test_answer_blocks_follow_the_next_turns_chain() -> None:
    """Worker pages finer than the client's blocks: the answer's chain starts at the client's last full
    block; a prompt ending past a worker page inside a client block is not extended (its tail is rewritten)."""
    from rlroute.worker.tokens import answer_blocks, block_ids, id_blocks

    prompt, answer = (11, 12), (13, 14)
    ids = block_ids(prompt, 128).tolist()  # 256 tokens = 2 client blocks = 4 worker pages
    keys = answer_blocks(ids, id_blocks(ids, 64), 128, answer, 64)
    nxt = id_blocks(block_ids((*prompt, *answer), 128).tolist(), 64)
    assert keys == nxt[4:] and len(keys) == 4
    tail = ids[:200]  # ends 72 tokens into client block 2, past worker page 3
    assert answer_blocks(tail, id_blocks(tail, 64), 128, answer, 64) == ()
    short = ids[:140]  # 12 tokens into client block 2: the worker's 2 full pages lie in block 1
    got = answer_blocks(short, id_blocks(short, 64), 128, answer, 64)
    assert got == id_blocks(block_ids((11, 13, 14), 128).tolist(), 64)[2:]
