"""The router's reliability semantics through the real router (``rlroute serve`` and emulated workers as
processes on loopback, stopped by PID): one retry loop with a budget and backoff, 408/429 retried, the
breaker's half-open probe, health thresholds with independent per-worker watches, OpenAI-shaped errors,
list prompts, request ids, the upstream API key and the admin API on its own listener; then the
coordinated weight update in each pause mode and with a step failing midway."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rlroute.cluster.live.launch import WorkerFleet
from rlroute.serve.launch import RouterProc
from tests.fleet import four_workers, worker_id

AUTH = {"Authorization": "Bearer t"}
TO_SMALL = {"x-rlroute-force-action": "small", **AUTH}  # the decision, forced (admin token)
SMALL = slice(2, 4)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFleet]:
    yield from four_workers(tmp_path_factory, 50.0)  # slow enough that requests are in flight during updates


@pytest.fixture
def fleet(workers: WorkerFleet) -> Iterator[WorkerFleet]:
    """The shared fleet, every fault knob reset (and stopped workers continued) after the test."""
    try:
        yield workers
    finally:
        for w in workers.workers:
            if w.proc.poll() is None:
                os.kill(w.proc.pid, signal.SIGCONT)
                httpx.post(w.url + "/rlroute/faults", json={"error_rate": 0.0, "hang": False, "health_status": 200,
                                                             "status_code": 500, "fail_path": ""},
                           timeout=10).raise_for_status()
                httpx.post(w.url + "/continue_generation", timeout=10)


def router(fleet: WorkerFleet, tmp_path: Path, *overrides: str, env: dict[str, str] | None = None) -> RouterProc:
    return RouterProc(fleet.urls("large"), fleet.urls("small"), tmp_path / "router.log",
                      ["scrape_interval_s=0.2", "health_interval_s=0.2", "retry.initial_backoff_ms=5", *overrides],
                      env={"RLROUTE_ADMIN_TOKEN": "t", **(env or {})})


def fault(fleet: WorkerFleet, idx: range | slice | list[int], **knobs: object) -> None:
    ws = fleet.workers[idx] if isinstance(idx, slice) else [fleet.workers[i] for i in idx]
    for w in ws:
        httpx.post(w.url + "/rlroute/faults", json=knobs, timeout=10).raise_for_status()


def small_request(i: int = 0, max_new: int = 2) -> dict[str, object]:
    return {"text": f"short {i}", "sampling_params": {"max_new_tokens": max_new}}  # the heuristic sends it small


def status(r: RouterProc) -> dict[str, object]:
    out = httpx.get(r.admin_url + "/admin/status", headers=AUTH, timeout=10)
    assert out.status_code == 200, out.text
    return out.json()  # type: ignore[no-any-return]


def test_one_retry_loop_with_a_budget(fleet: WorkerFleet, tmp_path: Path) -> None:
    """Both small workers fail: the attempts go on in the large pool within ONE budget (no nested loops)."""
    fault(fleet, SMALL, error_rate=1.0)
    r = router(fleet, tmp_path, "retry.max_attempts=3", "breaker_failures=100")
    try:
        resp = httpx.post(r.url + "/generate", json=small_request(), headers=TO_SMALL, timeout=30)
        assert resp.status_code == 200 and resp.headers["x-rlroute-pool"] == "large"
        assert resp.headers["x-rlroute-attempts"] == "3"  # 2 small, then 1 large
    finally:
        r.stop()
    r = router(fleet, tmp_path, "retry.max_attempts=2", "breaker_failures=100")
    try:
        resp = httpx.post(r.url + "/generate", json=small_request(), headers=TO_SMALL, timeout=30)
        assert resp.status_code == 503, resp.text
        assert "after 2 attempt(s)" in resp.json()["error"]["message"]
    finally:
        r.stop()


def test_backoff_waits_between_attempts(fleet: WorkerFleet, tmp_path: Path) -> None:
    fault(fleet, SMALL, error_rate=1.0)
    r = router(fleet, tmp_path, "retry.initial_backoff_ms=400", "retry.multiplier=2", "retry.jitter=0",
               "allow_cross_pool=false", "breaker_failures=100")
    try:
        t0 = time.perf_counter()
        resp = httpx.post(r.url + "/generate", json=small_request(), headers=TO_SMALL, timeout=30)
        elapsed = time.perf_counter() - t0
        assert resp.status_code == 503 and "after 2 attempt(s)" in resp.text
        assert elapsed >= 0.4  # one backoff of 400 ms between the two attempts
    finally:
        r.stop()


@pytest.mark.parametrize("code", [408, 429, 502])
def test_retryable_statuses_go_to_another_worker(fleet: WorkerFleet, tmp_path: Path, code: int) -> None:
    fault(fleet, [2], error_rate=1.0, status_code=code)
    r = router(fleet, tmp_path, "breaker_failures=100")
    try:
        for i in range(6):
            resp = httpx.post(r.url + "/generate", json=small_request(i), headers=TO_SMALL, timeout=30)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-rlroute-worker"] == worker_id(fleet, 3)
        label = "5xx" if code >= 500 else str(code)
        assert f'outcome="{label}",pool="small"' in httpx.get(r.url + "/metrics", timeout=10).text
    finally:
        r.stop()


def test_all_workers_429_is_passed_on_with_retry_after(fleet: WorkerFleet, tmp_path: Path) -> None:
    fault(fleet, range(4), error_rate=1.0, status_code=429)
    r = router(fleet, tmp_path, "breaker_failures=100")
    try:
        resp = httpx.post(r.url + "/generate", json=small_request(), headers=TO_SMALL, timeout=30)
        assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
        assert resp.json()["error"]["type"] == "rate_limit_error"
    finally:
        r.stop()


def test_breaker_half_open_probe_and_success_threshold(fleet: WorkerFleet, tmp_path: Path) -> None:
    """Open after 2 failures; after the cooldown one probe at a time; closed after 3 successes (the worker's
    health checks pass again: each is a probe while half-open)."""
    fault(fleet, [2], error_rate=1.0)
    r = router(fleet, tmp_path, "breaker_failures=2", "breaker_successes=3", "breaker_cooldown_s=1.5",
               "health_interval_s=0.3")
    bad = fleet.workers[2].url

    def worker() -> dict[str, object]:
        ws = status(r)["pools"]["small"]["workers"]  # type: ignore[index]
        return next(w for w in ws if w["url"] == bad)  # type: ignore[no-any-return]

    def breaker() -> str:
        return str(worker()["breaker"])

    try:
        for i in range(8):
            assert httpx.post(r.url + "/generate", json=small_request(i), headers=TO_SMALL, timeout=30).status_code == 200
        assert breaker() == "open"
        fault(fleet, [2], error_rate=0.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and breaker() != "closed":
            time.sleep(0.1)
        w = worker()
        assert w["breaker"] == "closed" and w["breaker_half_opens"] == 1, w  # closed through one half-open phase
    finally:
        r.stop()


def test_health_thresholds_and_independent_watches(fleet: WorkerFleet, tmp_path: Path) -> None:
    """A stopped (SIGSTOP) worker never answers: it turns unhealthy after 3 failed checks, while the others'
    scrapes go on at their own pace (no round waits for it); 2 passing checks bring it back."""
    r = router(fleet, tmp_path, "health_timeout_s=1.0", "scrape_interval_s=0.1", "health_interval_s=0.1")
    stopped = fleet.workers[3]
    try:
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        time.sleep(0.5)
        st = status(r)["pools"]["small"]["workers"]  # type: ignore[index]
        w = {x["url"]: x for x in st}
        assert w[stopped.url]["health_ok"]  # one hung check is not enough to mark it down
        others = [x for x in status(r)["pools"]["large"]["workers"] + st if x["url"] != stopped.url]  # type: ignore[operator]
        assert all(x["scraped_ago_s"] < 0.6 for x in others), others  # the others are not held up
        deadline = time.monotonic() + 15  # >= 3 checks of 1 s timeout each
        while time.monotonic() < deadline and {x["url"]: x for x in status(r)["pools"]["small"]["workers"]}[  # type: ignore[index]
                stopped.url]["health_ok"]:
            time.sleep(0.2)
        assert time.monotonic() - deadline + 15 >= 2.5  # not before 3 failed checks
        w = {x["url"]: x for x in status(r)["pools"]["small"]["workers"]}  # type: ignore[index]
        assert not w[stopped.url]["health_ok"]
        for i in range(4):
            resp = httpx.post(r.url + "/generate", json=small_request(i), headers=TO_SMALL, timeout=30)
            assert resp.status_code == 200 and resp.headers["x-rlroute-worker"] == worker_id(fleet, 2)
        os.kill(stopped.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not {x["url"]: x for x in status(r)["pools"]["small"]["workers"]}[  # type: ignore[index]
                stopped.url]["health_ok"]:
            time.sleep(0.1)
        assert {x["url"]: x for x in status(r)["pools"]["small"]["workers"]}[stopped.url]["health_ok"]  # type: ignore[index]
    finally:
        os.kill(stopped.proc.pid, signal.SIGCONT)
        r.stop()


def test_errors_ids_list_prompts_auth_and_admin_listener(fleet: WorkerFleet, tmp_path: Path) -> None:
    r = router(fleet, tmp_path, env={"RLROUTE_UPSTREAM_API_KEY": "upstream-secret"})
    try:
        # validation errors and unknown paths: OpenAI's error object, the field named
        bad = httpx.post(r.url + "/generate", json={"text": "a", "sampling_params": {"max_new_tokens": -1}}, timeout=30)
        assert bad.status_code == 400
        err = bad.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] == "sampling_params.max_new_tokens"
        assert err["type"] == "invalid_request_error" and err["code"] == 400
        missing = httpx.get(r.url + "/nope", timeout=10)
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        # the admin API is not on the data plane; it is on its own listener
        assert httpx.get(r.url + "/admin/status", headers=AUTH, timeout=10).status_code == 404
        assert httpx.get(r.admin_url + "/admin/status", timeout=10).json()["error"]["code"] == 401
        assert status(r)["pools"]
        # list prompts: strings and token ids, one choice each
        texts = httpx.post(r.url + "/v1/completions", json={"prompt": ["one", "two"], "max_tokens": 2}, timeout=30)
        assert texts.status_code == 200 and [c["index"] for c in texts.json()["choices"]] == [0, 1]
        ids = httpx.post(r.url + "/v1/completions", json={"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 2}, timeout=30)
        assert ids.status_code == 200 and len(ids.json()["choices"]) == 2
        one = httpx.post(r.url + "/v1/completions", json={"prompt": [7, 8, 9], "max_tokens": 2}, timeout=30)
        assert one.status_code == 200 and len(one.json()["choices"]) == 1
        stream = httpx.post(r.url + "/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2, "stream": True},
                            timeout=30)
        assert stream.status_code == 200 and stream.text.rstrip().endswith("data: [DONE]")
        # request ids: propagated upstream and answered; generated when absent; the upstream key forwarded
        given = httpx.post(r.url + "/generate", json=small_request(), headers={**TO_SMALL, "X-Request-ID": "req-42"}, timeout=30)
        assert given.headers["x-request-id"] == "req-42"
        made = httpx.post(r.url + "/generate", json=small_request(1), headers=TO_SMALL, timeout=30).headers["x-request-id"]
        assert len(made) == 32
        seen = [q for w in fleet.workers for q in
                httpx.get(w.url + "/get_server_info", timeout=10).json()["rlroute"]["recent_requests"]]
        assert {"request_id": "req-42", "authorization": "Bearer upstream-secret"} in seen
        assert any(q["request_id"] == made for q in seen)
    finally:
        r.stop()


MAX_NEW = 6000  # ~1 s of wall time per answer at speed-up 50: still running when the update starts


async def _inflight(url: str, n: int, max_new: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as c:
        body = {"text": "Write a long story about routers.", "sampling_params": {"max_new_tokens": max_new}}
        return list(await asyncio.gather(*(c.post(url + "/generate", json={**body, "text": f"{i} {body['text']}"},
                                                  headers=TO_SMALL) for i in range(n))))


@pytest.mark.parametrize("mode", ["retract", "in_place", "abort"])
def test_weight_update_pause_modes(fleet: WorkerFleet, tmp_path: Path, mode: str) -> None:
    """Requests in flight on the small pool during its update: ``retract`` (default) and ``in_place`` finish
    them whole; ``abort`` (SGLang's own default, only on request) ends them with ``finish_reason: abort``."""
    r = router(fleet, tmp_path, "allow_cross_pool=false")
    try:
        async def run() -> tuple[list[httpx.Response], httpx.Response]:
            load = asyncio.create_task(_inflight(r.url, 6, MAX_NEW))
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(timeout=60) as c:
                body = {"model_path": "/ckpt/2", "weight_version": f"v-{mode}", "pause_mode": mode,
                        "flush_cache": mode != "in_place"}
                upd = await c.post(r.admin_url + "/admin/pools/small/update_weights", json=body, headers=AUTH)
            return await load, upd

        answers, upd = asyncio.run(run())
        assert upd.status_code == 200, upd.text
        assert upd.json()["pause_mode"] == mode and ("flush_s" in upd.json()["steps"]) == (mode != "in_place")
        reasons = [a.json()["meta_info"]["finish_reason"]["type"] for a in answers]
        assert all(a.status_code == 200 for a in answers)
        if mode == "abort":
            assert "abort" in reasons, reasons
        else:
            assert reasons == ["length"] * len(answers), reasons
            assert all(a.json()["meta_info"]["completion_tokens"] == MAX_NEW for a in answers)
        if mode != "in_place":  # the pause found them running
            assert upd.json()["paused_requests"] > 0, upd.json()
        for w in fleet.workers[SMALL]:
            info = httpx.get(w.url + "/get_server_info", timeout=10).json()["rlroute"]
            assert info["weight_version"] == f"v-{mode}" and not info["paused"]
    finally:
        r.stop()


def test_in_place_with_flush_is_refused(fleet: WorkerFleet, tmp_path: Path) -> None:
    r = router(fleet, tmp_path)
    try:
        resp = httpx.post(r.admin_url + "/admin/pools/small/update_weights", headers=AUTH, timeout=30,
                          json={"model_path": "/ckpt/3", "pause_mode": "in_place", "flush_cache": True})
        assert resp.status_code == 400 and "in_place" in resp.json()["error"]["message"]
    finally:
        r.stop()


@pytest.mark.parametrize("step", ["/pause_generation", "/update_weights_from_disk", "/flush_cache"])
def test_weight_update_failing_midway_leaves_no_worker_paused(fleet: WorkerFleet, tmp_path: Path, step: str) -> None:
    """One worker's step fails: 502 naming it, ``continue_generation`` still reaches every worker, the requests
    in flight finish and the pool takes traffic again."""
    fault(fleet, [3], fail_path=step)
    r = router(fleet, tmp_path, "allow_cross_pool=false")
    try:
        async def run() -> tuple[list[httpx.Response], httpx.Response]:
            load = asyncio.create_task(_inflight(r.url, 4, MAX_NEW))
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(timeout=60) as c:
                upd = await c.post(r.admin_url + "/admin/pools/small/update_weights", headers=AUTH,
                                   json={"model_path": "/ckpt/4"})
            return await load, upd

        answers, upd = asyncio.run(run())
        assert upd.status_code == 502 and step in upd.json()["error"]["message"], upd.text
        assert "continue_generation was sent" in upd.json()["error"]["message"]
        assert all(a.status_code == 200 and a.json()["meta_info"]["completion_tokens"] == MAX_NEW for a in answers)
        for w in fleet.workers[SMALL]:
            assert not httpx.get(w.url + "/get_server_info", timeout=10).json()["rlroute"]["paused"]
        assert httpx.post(r.url + "/generate", json=small_request(), headers=TO_SMALL, timeout=30).status_code == 200
    finally:
        r.stop()
