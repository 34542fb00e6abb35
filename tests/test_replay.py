"""``rlroute bench replay`` against a real emulated worker on loopback, and against a dead endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlroute.bench.replay import load_requests, replay, summarise
from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec, free_port
from rlroute.types import Request

SPEEDUP = 100.0


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with WorkerFleet([WorkerSpec("small", "qwen3-4b__h100.estimate", SPEEDUP)], tmp_path_factory.mktemp("w")) as f:
        yield f.workers[0].url


def _conversation(n: int) -> list[Request]:
    """One growing conversation: each turn repeats the previous turns' blocks (prefix reuse)."""
    return [Request(id=i, arrival=0.5 * i, input_len=64 * (4 + 2 * i), output_len=16,
                    blocks=tuple(range(1, 5 + 2 * i)), block_size=64) for i in range(n)]


def test_replay_records_latency_tokens_and_cache_hits(worker: str) -> None:
    reqs = _conversation(12)
    recs = asyncio.run(replay(worker, reqs, time_scale=1.0 / SPEEDUP))
    assert [r.request_id for r in recs] == list(range(12))
    assert all(r.ok for r in recs), [r.error for r in recs]
    for r, q in zip(recs, reqs, strict=True):
        assert r.prompt_tokens == q.input_len and r.output_tokens == q.output_len
        assert r.ttft_s is not None and r.e2e_s is not None and 0 < r.ttft_s <= r.e2e_s
        # the worker's own (modelled) latencies are passed through; their sign is the worker's business
        # (tests/test_live_cluster.py::test_live_latencies_are_causal)
        assert r.model_e2e_s is not None and r.model_ttft_s is not None
    assert recs[0].cached_tokens == 0
    # later turns reuse earlier turns' blocks (how much depends on which turn the worker admitted first)
    assert all(r.cached_tokens % 64 == 0 and r.cached_tokens < r.prompt_tokens for r in recs)
    assert sum(r.cached_tokens > 0 for r in recs[1:]) >= 8
    s = summarise(recs)
    assert s["availability"] == 1.0 and 0.5 < s["cache_hit_rate"] < 1.0
    assert s["p50_ttft_s"] <= s["p99_ttft_s"] and s["p99_e2e_s"] >= s["p99_ttft_s"]


def test_replay_is_open_loop(worker: str) -> None:
    """Send times follow the rescaled arrivals, not the completions."""
    reqs = [Request(id=i, arrival=0.0 + 10.0 * i, input_len=128, output_len=400, blocks=(), block_size=64)
            for i in range(5)]
    recs = asyncio.run(replay(worker, reqs, time_scale=0.01))
    sent = [r.sent for r in recs]
    assert all(abs(s - 0.1 * i) < 0.05 for i, s in enumerate(sent)), sent
    assert all(r.ok for r in recs)


def test_non_streaming_replay(worker: str) -> None:
    recs = asyncio.run(replay(worker, _conversation(4), time_scale=1.0 / SPEEDUP, stream=False))
    assert all(r.ok and r.ttft_s is None and r.e2e_s and r.model_ttft_s is not None for r in recs)
    assert recs[-1].cached_tokens > 0


def test_dead_endpoint_is_recorded_not_hung() -> None:
    recs = asyncio.run(replay(f"http://127.0.0.1:{free_port()}", _conversation(3), time_scale=0.001))
    s = summarise(recs)
    assert s["ok"] == 0 and s["availability"] == 0.0 and sum(s["errors"].values()) == 3
    assert all("ConnectError" in (r.error or "") for r in recs)


def test_cli_replays_a_configured_workload(worker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rlroute.cli import main

    rc = main(["bench", "replay", "--endpoint", worker, "--n", "20", "--time-scale", str(1 / SPEEDUP),
               "--records", str(tmp_path / "recs.jsonl"), "--out", str(tmp_path / "replay.json"),
               "workload=synthetic"])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["bench"] == "replay" and last["n"] == 20 and last["unit"] == "s_p99_ttft_wall"
    assert last["availability"] == 1.0 and last["value"] == last["p99_ttft_s"]
    lines = (tmp_path / "recs.jsonl").read_text().splitlines()
    assert len(lines) == 20 and all(json.loads(x)["status"] == 200 for x in lines)
    assert len(load_requests(["workload=synthetic"], "test", 5, 0)) == 5


def test_replay_through_sglang_router(worker: str, tmp_path: Path) -> None:
    """The same replay against a real sglang-router (cache_aware) in front of the worker."""
    from rlroute.cluster.live.launch import start_sglang_router, terminate

    proc, url = start_sglang_router([worker], tmp_path / "router.log")
    try:
        recs = asyncio.run(replay(url, _conversation(6), time_scale=1.0 / SPEEDUP))
    finally:
        terminate([proc])
    assert all(r.ok for r in recs), [r.error for r in recs]
    assert all(r.ttft_s is not None for r in recs) and sum(r.cached_tokens for r in recs) > 0
