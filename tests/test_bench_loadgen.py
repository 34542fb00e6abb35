"""The side-by-side router bench's open-loop generator: fresh prompts, scheduled-time latency, the
sustained rule, and one real phase against an emulated worker in its own process; the bench's rlroute
point through a real router (``ood.enforce=false``: the policy decides every request, its decisions are
recorded per point) and its rule that a point the policy did not decide is flagged, not compared."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rlroute.bench import router as bench
from rlroute.bench.loadgen import percentiles, prompt, sustained
from rlroute.bench.parity import DEFAULT_POLICY
from rlroute.cluster.live.launch import (
    REPO,
    WorkerFleet,
    WorkerSpec,
    free_port,
    launch_until_healthy,
    terminate,
)
from rlroute.serve.launch import RouterProc
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


def test_a_point_the_policy_did_not_decide_reports_no_added_latency() -> None:
    arm = {"sustained": True, "p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 5.0}
    row = {"direct": {**arm, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0}, "rlroute": {**arm, "policy_share_ok": True}}
    assert bench._added(row, "rlroute") == {"p50": 1.0, "p90": 2.0, "p99": 4.0}
    assert bench._added({**row, "rlroute": {**arm, "policy_share_ok": False}}, "rlroute") is None


@pytest.mark.parametrize("enforce", ["false", "true"])
def test_the_rlroute_point_records_who_decided(tmp_path_factory: pytest.TempPathFactory, enforce: str) -> None:
    """With ``ood.enforce=false`` (the bench's setting) every request of a point is the policy's decision and
    the point says so; with the guard enforcing, whatever it refuses shows as fallbacks by reason."""
    tmp = tmp_path_factory.mktemp("bench-router")
    fleet = WorkerFleet([WorkerSpec("large", "qwen3-235b-a22b-fp8__h100x8", 10000.0),
                         WorkerSpec("small", "qwen3-4b__h100", 10000.0)], tmp)
    fleet.start()
    try:
        with RouterProc(fleet.urls("large"), fleet.urls("small"), tmp / "router.log",
                        [f"policy.path={DEFAULT_POLICY}", "speedup=10000", f"ood.enforce={enforce}"]) as r:
            res = bench._point([r.url], 40.0, 1.0, 0, r.proc.pid, router=True)
    finally:
        fleet.stop()
    d = res["decisions"]
    n = sum(d["by_source"].values())
    assert n == res["ok"] + 4  # the generator's 4 warm-up requests are decisions too
    assert d["by_source"].get("fallback", 0.0) == sum(d["fallback_reasons"].values())
    if enforce == "false":
        assert d["by_source"] == {"policy": n} and res["policy_share"] == 1.0 and res["policy_share_ok"]
    else:
        assert d["ood_unenforced"] == 0.0
        assert res["policy_share_ok"] == (d["by_source"].get("policy", 0.0) >= 0.95 * n)


def test_the_floor_arm_passes_a_worker_answer_through(worker: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The ``floor`` arm (a bare pass-through on the router's HTTP stack) answers the generator's requests with
    the worker's own answers, and the bench times it like any arm."""
    port = free_port()
    proc, url = launch_until_healthy([sys.executable, "-m", "rlroute.bench.floor_proxy", "--port", str(port),
                                      "--worker", worker], f"http://127.0.0.1:{port}",
                                     tmp_path_factory.mktemp("floor") / "floor.log", "the floor proxy")
    try:
        direct = httpx.post(worker + "/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 3}},
                            timeout=30)
        through = httpx.post(url + "/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 3}},
                             timeout=30)
        json_type = {"content-type": "application/json"}
        bad = httpx.post(url + "/generate", content=b"{not json", headers=json_type, timeout=30)
        bad_direct = httpx.post(worker + "/generate", content=b"{not json", headers=json_type, timeout=30)
        res = bench._point([url], 40.0, 1.0, 0, proc.pid)
    finally:
        terminate([proc])
    assert through.status_code == direct.status_code == 200
    assert through.headers["content-type"].startswith("application/json")
    assert through.json()["meta_info"]["completion_tokens"] == direct.json()["meta_info"]["completion_tokens"] == 3
    assert bad.status_code == bad_direct.status_code >= 400 and bad.json() == bad_direct.json()  # passed through
    assert res["ok"] == res["requests"] == 40 and res["errors"] == 0 and res["router_cpu_us_per_request"] > 0


def test_repetitions_pool_their_latencies() -> None:
    """A point's repetitions are pooled: percentiles over every answered request, sustained only if every
    repetition was, CPU per request weighted by answers, decisions summed; the raw latencies are dropped."""
    def rep(lat: list[float], achieved: float, cpu: float, policy: float) -> dict[str, object]:
        return {"offered_rps": 100.0, "requests": len(lat), "ok": len(lat), "errors": 0, "error_kinds": {},
                "achieved_rps": achieved, "latencies_ms": lat, "loadavg_1m": [0.5, 0.6],
                "sustained": sustained({"errors": 0, "achieved_rps": achieved, "offered_rps": 100.0}),
                "router_cpu_us_per_request": cpu, "policy_share_ok": True,
                "decisions": {"by_source": {"policy": policy}, "fallback_reasons": {}, "ood_unenforced": 0.0}}

    a, b = [1.0, 2.0, 3.0, 4.0], [10.0, 20.0]
    out = bench._pooled([rep(a, 100.0, 500.0, 4.0), rep(b, 99.0, 800.0, 2.0)])
    assert out["p50_ms"] == pytest.approx(percentiles([x / 1e3 for x in a + b])["p50_ms"])
    assert out["max_ms"] == pytest.approx(20.0) and out["ok"] == 6 and out["sustained"]
    assert out["router_cpu_us_per_request"] == pytest.approx((4 * 500 + 2 * 800) / 6, abs=0.1)
    assert out["decisions"]["by_source"] == {"policy": 6.0} and out["policy_share"] == 1.0
    assert all("latencies_ms" not in r for r in out["reps"]) and len(out["reps"]) == 2
    assert not bench._pooled([rep(a, 100.0, 500.0, 4.0), rep(b, 90.0, 800.0, 2.0)])["sustained"]


def test_the_verdict_needs_both_rates_and_a_positive_denominator() -> None:
    """``meets_target``: rlroute's and the floor's p99 added each <= 1.5x sglang-router's at 200 *and* 500 req/s;
    a ratio over sglang-router's p99 added <= 0, or an arm not sustained, is undefined and never meets it."""
    def arms(rl: float | None, sg: float, fl: float) -> dict[str, Any]:
        return {"rlroute": None if rl is None else {"p99": rl}, "sglang": {"p99": sg}, "floor": {"p99": fl}}

    added = {"200": arms(0.6, 0.5, 0.4), "500": arms(0.9, 0.5, 0.8)}
    assert bench.p99_ratios(added) == {"200": {"rlroute": 1.2, "floor": 0.8}, "500": {"rlroute": 1.8, "floor": 1.6}}
    assert bench.meets_target(added) == {"rlroute": False, "floor": False}
    added["500"] = arms(0.75, 0.5, 0.2)  # exactly 1.5: met
    assert bench.meets_target(added) == {"rlroute": True, "floor": True}
    added["500"] = arms(0.1, 0.0, 0.1)  # sglang-router added nothing at p99: undefined
    assert bench.p99_ratios(added)["500"] == {"rlroute": None, "floor": None}
    assert bench.meets_target(added) == {"rlroute": False, "floor": False}
    added["500"] = arms(None, 0.5, 0.2)  # rlroute did not sustain 500 req/s
    assert bench.meets_target(added) == {"rlroute": False, "floor": True}
    assert bench.meets_target({"200": arms(0.1, 0.5, 0.1)}) == {"rlroute": None, "floor": None}  # 500 not run
