"""The routing service end to end: 2 large + 2 small emulated workers and ``rlroute serve`` as real
processes on loopback, with a freshly exported ONNX policy (``rlroute export fresh=true``).

Every process a test starts is stopped by PID in a ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlroute.cluster.live.launch import REPO, WorkerFleet, start_sglang_router
from rlroute.serve.launch import RouterProc
from tests.fleet import four_workers

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def exported_policy(config: pytest.Config) -> Path:
    """A fresh exported policy, cached across runs while the feature schema is unchanged."""
    from rlroute.features import SCHEMA

    cache = getattr(config, "cache", None)  # absent under `-p no:cacheprovider`: export into a temp dir
    root = Path(str(cache.mkdir("rlroute-fresh-policy"))) if cache else Path(tempfile.mkdtemp(prefix="rlroute-"))
    folder = root / SCHEMA.hash[:16]
    if not (folder / "manifest.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        cmd = [sys.executable, "-m", "rlroute.cli", "export", "fresh=true", f"out={folder}", "n_verify=200"]
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return folder


@pytest.fixture(scope="module")
def policy(request: pytest.FixtureRequest) -> Path:
    return exported_policy(request.config)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFleet]:
    yield from four_workers(tmp_path_factory, 500.0)


@asynccontextmanager
async def in_process(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The data-plane ``app`` served in this process on a free loopback port (startup and cleanup run), and a
    client of it."""
    from aiohttp.test_utils import TestServer

    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url(""))) as c:
            yield c
    finally:
        await server.close()


def start_router(fleet: WorkerFleet, log: Path, *overrides: str) -> RouterProc:
    return RouterProc(fleet.urls("large"), fleet.urls("small"), log,
                      ["scrape_interval_s=0.2", "health_interval_s=0.2", *overrides], env={"RLROUTE_ADMIN_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def served(fleet: WorkerFleet, policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProc]:
    # The fresh policy's OOD statistics come from env rollouts of the default workload; these hand-written
    # prompts on an idle fleet are not that distribution, so the guard is off here (it is tested through the
    # router in test_serve_ood.py); the policy path itself is under test.
    r = start_router(fleet, tmp_path_factory.mktemp("router") / "router.log", f"policy.path={policy}",
                     "ood.enabled=false")
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def router(served: RouterProc) -> str:
    """The data plane's URL."""
    return served.url


@pytest.fixture(scope="module")
def admin(served: RouterProc) -> str:
    """The admin API's own listener."""
    return served.admin_url


def metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


BODIES = {
    "/generate": {"text": "Explain prefix caching in two sentences.", "sampling_params": {"max_new_tokens": 6}},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 6},
    "/v1/completions": {"prompt": "Once upon a time", "max_tokens": 6},
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", list(BODIES))
def test_front_endpoints_answer_and_stream(router: str, path: str, stream: bool) -> None:
    r = httpx.post(router + path, json={**BODIES[path], "stream": stream}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-rlroute-action"] in ("large", "small", "hybrid")
    assert r.headers["x-rlroute-pool"] in ("large", "small")
    # the answering worker by a stable id, never its (internal) address; the admin status maps ids to URLs
    assert r.headers["x-rlroute-worker"] in {f"{r.headers['x-rlroute-pool']}-{i}" for i in range(2)}
    if stream:
        events = [e[len("data: "):] for e in r.text.split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "[DONE]" and len(events) >= 2
    else:
        body = r.json()
        assert ("meta_info" in body) if path == "/generate" else (body["usage"]["completion_tokens"] > 0)


def test_policy_decides_and_metrics_count_it(router: str) -> None:
    before = metric(router, "rlroute_router_decisions_total", source="policy")
    for _ in range(3):
        r = httpx.post(router + "/generate", json=BODIES["/generate"], timeout=30)
        assert r.headers["x-rlroute-source"] == "policy", r.headers
    assert metric(router, "rlroute_router_decisions_total", source="policy") == before + 3
    text = httpx.get(router + "/metrics", timeout=10).text
    for name in ("rlroute_router_inflight", "rlroute_router_request_seconds", "rlroute_router_decision_seconds"):
        assert name in text


def test_emulated_eos_header_reaches_the_worker(router: str) -> None:
    """A load generator sends the client's cap and ends the reply at its trace length: ``rlroute serve``
    passes ``x-rlroute-output-tokens`` on to the worker that answers (``rlroute.worker.app``)."""
    from rlroute.worker.tokens import OUTPUT_TOKENS_HEADER

    body = {"text": "Summarise the plan in one line. " * 8, "sampling_params": {"max_new_tokens": 40}}
    r = httpx.post(router + "/generate", json=body, headers={OUTPUT_TOKENS_HEADER: "5"}, timeout=30)
    assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 5, r.text
    assert httpx.post(router + "/generate", json=body, timeout=30).json()["meta_info"]["completion_tokens"] == 40


@pytest.mark.parametrize("path", ["/health", "/metrics", "/openapi.json"])
def test_get_endpoints(router: str, path: str) -> None:
    assert httpx.get(router + path, timeout=10).status_code == 200


@pytest.mark.parametrize("path,content", [
    ("/generate", b"{not json"),
    ("/generate", json.dumps({"text": 3}).encode()),
    ("/generate", json.dumps({"sampling_params": {"max_new_tokens": 3}}).encode()),
    ("/generate", json.dumps({"text": "a", "sampling_params": {"max_new_tokens": -5}}).encode()),
    ("/generate", json.dumps({"text": "a", "sampling_params": {"max_new_tokens": 10**12}}).encode()),
    ("/v1/chat/completions", json.dumps({"messages": []}).encode()),
    ("/v1/chat/completions", json.dumps({"messages": [{"content": "no role"}]}).encode()),
    ("/v1/completions", json.dumps({"prompt": [], "max_tokens": 2}).encode()),
    ("/v1/completions", json.dumps({"prompt": [1.5, "b"], "max_tokens": 2}).encode()),
    ("/v1/completions", json.dumps({"prompt": "x", "max_tokens": "many"}).encode()),
    ("/generate", b'{"text": "' + b"a" * (5 * 1024 * 1024) + b'"}'),
])
def test_bad_input_is_4xx_naming_the_problem(router: str, path: str, content: bytes) -> None:
    r = httpx.post(router + path, content=content, headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= r.status_code < 500, r.text[:300]
    assert r.text  # a message, not an empty body


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
@pytest.mark.parametrize("path", ["/admin/policy/reload", "/admin/pools/large/update_weights"])
def test_admin_needs_the_token(admin: str, path: str, headers: dict[str, str]) -> None:
    r = httpx.post(admin + path, json={"model_path": "/w"}, headers=headers, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def _load(url: str, n: int, during: asyncio.Future[object] | None = None) -> list[int]:
    async with httpx.AsyncClient(timeout=60) as c:
        async def one(i: int) -> int:
            path = list(BODIES)[i % 3]
            r = await c.post(url + path, json={**BODIES[path], "stream": i % 2 == 0})
            return r.status_code

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_reload_under_load_drops_nothing(router: str, admin: str, policy: Path, tmp_path: Path) -> None:
    async def run() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(timeout=60) as c:
            load = asyncio.create_task(_load(router, 40))
            codes = []
            for _ in range(3):
                r = await c.post(admin + "/admin/policy/reload", json={"path": str(policy)}, headers=AUTH)
                codes.append(r.status_code)
            return await load, codes

    statuses, reloads = asyncio.run(run())
    assert reloads == [200, 200, 200]
    assert statuses == [200] * 40
    bad = tmp_path / "missing"
    r = httpx.post(admin + "/admin/policy/reload", json={"path": str(bad)}, headers=AUTH, timeout=30)
    assert r.status_code == 422 and "policy_missing" in r.text
    status = httpx.get(admin + "/admin/status", headers=AUTH, timeout=10).json()
    assert status["policy"]["loaded"] and status["policy"]["path"] == str(policy)  # old one kept


@pytest.mark.parametrize("pool", ["large", "small"])
def test_weight_update_under_load_drops_nothing(router: str, admin: str, pool: str) -> None:
    async def run() -> tuple[list[int], dict[str, object]]:
        async with httpx.AsyncClient(timeout=60) as c:
            load = asyncio.create_task(_load(router, 40))
            await asyncio.sleep(0.05)
            r = await c.post(admin + f"/admin/pools/{pool}/update_weights",
                             json={"model_path": "/ckpt/step-2", "weight_version": "2"}, headers=AUTH)
            assert r.status_code == 200, r.text
            return await load, r.json()

    statuses, result = asyncio.run(run())
    assert statuses == [200] * 40
    assert result["interruption_s"] > 0 and set(result["steps"]) >= {"pause_s", "flush_s", "update_s", "continue_s"}
    for url in [w["url"] for w in httpx.get(admin + "/admin/status", headers=AUTH).json()["pools"][pool]["workers"]]:
        assert httpx.get(url + "/get_server_info").json()["rlroute"]["weight_version"] == "2"


def _corrupt(policy: Path, dst: Path) -> Path:
    shutil.copytree(policy, dst)
    data = (dst / "policy.onnx").read_bytes()
    (dst / "policy.onnx").write_bytes(data[: len(data) // 2])
    return dst


def _mismatch(policy: Path, dst: Path) -> Path:
    shutil.copytree(policy, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["feature_schema"]["hash"] = "0" * 64
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("make,reason", [(_corrupt, "policy_corrupt"), (_mismatch, "schema_mismatch"),
                                         (None, "policy_missing")])
def test_untrusted_policy_falls_back_with_reason(fleet: WorkerFleet, policy: Path, tmp_path: Path,
                                                 make: object, reason: str) -> None:
    path = make(policy, tmp_path / "p") if callable(make) else tmp_path / "absent"
    r = start_router(fleet, tmp_path / "router.log", f"policy.path={path}")
    try:
        for _ in range(2):
            resp = httpx.post(r.url + "/generate", json=BODIES["/generate"], timeout=30)
            assert resp.status_code == 200
            assert resp.headers["x-rlroute-source"] == "fallback"
            assert resp.headers["x-rlroute-fallback-reason"] == reason
        assert metric(r.url, "rlroute_router_fallbacks_total", reason=reason) == 2
    finally:
        r.stop()


HYBRID_CASES = [(p, BODIES[p]) for p in BODIES] + [
    ("/generate", {"input_ids": list(range(100, 260)), "sampling_params": {"max_new_tokens": 6}})]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path,body", HYBRID_CASES, ids=["generate", "chat", "completions", "generate_ids"])
def test_hybrid_plans_on_large_and_answers_on_small(fleet: WorkerFleet, path: str, body: dict[str, object],
                                                    stream: bool) -> None:
    """Plan-and-execute for real, streamed or not: the large pool writes the plan (a chat's through the chat
    endpoint; an ``input_ids`` request's as the large model's ``output_ids``), the small pool answers with it."""
    from rlroute.serve.app import ROUTER, create_app
    from rlroute.serve.config import parse_config
    from rlroute.serve.decision import Outcome
    from rlroute.serve.proxy import _last_data
    from rlroute.types import Action

    cfg = parse_config({"pools": {"large": {"workers": fleet.urls("large")}, "small": {"workers": fleet.urls("small")}},
                        "hybrid": {"plan_tokens": 12}})
    app = create_app(cfg)
    app[ROUTER].slot.decide = lambda *a: Outcome(Action.HYBRID, "policy", None, 0.0)
    sent = {**body, "stream": stream}

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with in_process(app) as c, httpx.AsyncClient() as plain:
            direct = await plain.post(fleet.urls("small")[0] + path, json=body)
            return await c.post(path, json=sent, timeout=30), direct

    r, direct = asyncio.run(run())
    assert r.status_code == 200, r.text
    assert r.headers["x-rlroute-action"] == "hybrid" and r.headers["x-rlroute-pool"] == "small"
    plan = int(r.headers["x-rlroute-plan-tokens"])
    assert plan > 0
    answer = json.loads(_last_data(r.content)) if stream else r.json()
    key = "meta_info" if path == "/generate" else "usage"
    # the small pool saw the prompt plus the plan: a longer prompt than the request alone
    assert answer[key]["prompt_tokens"] > direct.json()[key]["prompt_tokens"]
    if "input_ids" in body:  # exactly the plan's ids appended (no bytes of its text)
        assert answer[key]["prompt_tokens"] == direct.json()[key]["prompt_tokens"] + plan == 160 + 12


def test_sglang_router_backend(fleet: WorkerFleet, policy: Path, tmp_path: Path) -> None:
    """backend=sglang_router: one sglang-router per pool; rlroute decides the pool, sglang-router the worker."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = {}
        for pool in ("large", "small"):
            proc, urls[pool] = start_sglang_router(fleet.urls(pool), tmp_path / f"sglang-router-{pool}.log")
            procs.append(proc)
        r = start_router(fleet, tmp_path / "router.log", f"policy.path={policy}", "backend=sglang_router",
                         f"pools.large.router_url={urls['large']}", f"pools.small.router_url={urls['small']}")
        try:
            for path, body in BODIES.items():
                if path.startswith("/v1/"):  # sglang-router requires OpenAI's mandatory "model" field
                    body = {**body, "model": "default"}
                resp = httpx.post(r.url + path, json=body, timeout=30)
                assert resp.status_code == 200, resp.text
                assert resp.headers["x-rlroute-worker"] == f"{resp.headers['x-rlroute-pool']}-0"  # one upstream
        finally:
            r.stop()
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


@pytest.mark.parametrize("fault,reason", [
    ("nan", "non_finite"),
    ("raise", "inference_error"),
    ("slow", "inference_timeout"),
    ("pool_down", "pool_unavailable"),
])
def test_runtime_faults_fall_back_with_reason(policy: Path, fault: str, reason: str) -> None:
    """The router's decision procedure on the real exported policy with an injected runtime fault."""
    import time

    import numpy as np

    from rlroute.cluster.base import ClusterState, InstanceState, PoolState
    from rlroute.policies.registry import make_policy
    from rlroute.serve.decision import OodSettings, PolicySlot
    from rlroute.types import Action, Request

    # guard off: this hand-built state is nothing like training (out_of_distribution would answer first)
    slot = PolicySlot(str(policy), timeout_ms=1000.0 if fault != "slow" else 0.001, fallback=make_policy("heuristic"),
                      ood=OodSettings(enabled=False))
    pol = slot.current.policy
    assert pol is not None
    real = pol.logits
    if fault == "nan":
        pol.logits = lambda obs: np.full(3, np.nan, np.float32)
    elif fault == "raise":
        def boom(obs: np.ndarray) -> np.ndarray:
            raise RuntimeError("onnxruntime exploded")
        pol.logits = boom
    elif fault == "slow":
        pol.logits = lambda obs: (time.sleep(0.002), real(obs))[1]
    elif fault == "pool_down":  # whatever the policy picks, its pool is paused
        pol.logits = lambda obs: np.array([5.0, 0.0, 0.0], np.float32)
    pools = {p: PoolState(p, [InstanceState(0, paused=(fault == "pool_down" and p == "large"))])
             for p in ("large", "small")}
    state = ClusterState(time=0.0, pools=pools)
    req = Request(id=0, arrival=0.0, input_len=10, output_len=4, prompt="what is 2+2?", max_new_tokens=4)
    out = slot.decide(req, state, {"large": [0], "small": [0]})
    assert out.source == "fallback" and out.reason == reason
    if fault == "pool_down":
        assert out.action == Action.SMALL  # the heuristic avoids the paused pool


@pytest.mark.parametrize("path", list(BODIES))
def test_streamed_answers_update_the_live_state(fleet: WorkerFleet, path: str) -> None:
    """A streamed answer is accounted like a whole one in the monitor the router shares with LiveCluster:
    latency averages, cost and the arrival rate move (SGLang streams carry meta_info; OpenAI streams carry
    usage in their last chunk, timed by the router)."""
    from rlroute.serve.app import ROUTER, create_app
    from rlroute.serve.config import parse_config
    from rlroute.serve.decision import Outcome
    from rlroute.types import Action

    cfg = parse_config({"pools": {"large": {"workers": fleet.urls("large")}, "small": {"workers": fleet.urls("small")}}})
    app = create_app(cfg)
    app[ROUTER].slot.decide = lambda *a: Outcome(Action.SMALL, "policy", None, 0.0)
    mon = app[ROUTER].upstreams.monitor

    async def run() -> list[httpx.Response]:
        async with in_process(app) as c:
            return [await c.post(path, json={**BODIES[path], "stream": True}, timeout=30) for _ in range(3)]

    before = mon.state()
    assert before.arrival_rate == 0.0 and before.pools["small"].cost == 0.0
    rs = asyncio.run(run())
    assert all(r.status_code == 200 for r in rs)
    after = mon.state()
    small = after.pools["small"]
    assert after.arrival_rate > 0.0
    assert small.cost > 0.0 and small.cost_rate > 0.0
    assert small.recent_e2e > 0.0 and small.recent_ttft > 0.0 and small.recent_output_tokens > 0.0
    assert sum(i.cost for i in small.instances) == pytest.approx(small.cost)
    assert all(w.inflight == 0 for p in mon.pools.values() for w in p.instances), "every stream was released"
