"""The side-by-side router bench's open-loop generator: fresh prompts, scheduled-time latency, the
sustained rule, and one real phase against an emulated worker in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rlroute.bench.loadgen import percentiles, prompt, sustained
from rlroute.cluster.live.launch import REPO, WorkerFleet, WorkerSpec
from rlroute.worker.tokens import text_blocks


def test_prompts_are_fresh_from_their_first_block() -> None:
    firsts = {text_blocks(prompt(i))[0] for i in range(2000)}
    assert len(firsts) == 2000 and all(500 <= len(prompt(i)) <= 600 for i in (0, 7, 1999))


def test_sustained_needs_no_errors_and_98_percent() -> None:
    ok = {"errors": 0, "achieved_rps": 490.0, "offered_rps": 500.0}
    assert sustained(ok)
    assert not sustained({**ok, "errors": 1})
    assert not sustained({**ok, "achieved_rps": 489.0})
    assert percentiles([0.001, 0.002, 0.003])["p50_ms"] == pytest.approx(2.0)
    assert percentiles([])["p99_ms"] is None


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    fleet = WorkerFleet([WorkerSpec("small", "qwen3-4b__h100", 10000.0)], tmp_path_factory.mktemp("lg"))
    fleet.start()
    try:
        yield fleet.workers[0].url
    finally:
        fleet.stop()


def test_one_phase_in_its_own_process(worker: str) -> None:
    out = subprocess.run([sys.executable, "-m", "rlroute.bench.loadgen", "--url", worker, "--rate", "50",
                          "--duration", "1", "--offset", "5"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["requests"] == res["ok"] == 50 and res["errors"] == 0
    assert res["p50_ms"] > 0 and res["p99_ms"] >= res["p50_ms"] and res["achieved_rps"] > 40
