"""Router parts without processes: config validation, circuit breaker, request hashing, policy loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rlroute.serve.config import ServeConfigError, parse_config
from rlroute.serve.decision import load
from rlroute.serve.reliability import Breaker, Health, RetryPolicy
from rlroute.worker.tokens import count_tokens, id_blocks, text_blocks

POOLS = {"large": {"workers": ["http://127.0.0.1:1"]}, "small": {"workers": ["http://127.0.0.1:2"]}}


@pytest.mark.parametrize("cfg,field", [
    ({"pools": {"large": POOLS["large"]}}, "serve.pools"),
    ({"pools": {**POOLS, "small": {"workers": []}}}, "serve.pools.small.workers"),
    ({"pools": {**POOLS, "small": {"workers": ["127.0.0.1:2"]}}}, "serve.pools.small"),
    ({"pools": POOLS, "backend": "nginx"}, "serve.backend"),
    ({"pools": POOLS, "backend": "sglang_router"}, "router_url"),
    ({"pools": POOLS, "retry": {"max_attempts": 0}}, "serve.retry.max_attempts"),
    ({"pools": POOLS, "retry": {"jitter": 2}}, "serve.retry.jitter"),
    ({"pools": POOLS, "retry": {"attempts": 2}}, "serve.retry"),
    ({"pools": POOLS, "admin_port": 8000}, "serve.admin_port"),
    ({"pools": POOLS, "port": "eighty"}, "serve.port"),
    ({"pools": POOLS, "fallback": "best"}, "serve.fallback"),
    ({"pools": POOLS, "fallback": {"complexity_threshold": 0.5}}, "serve.fallback"),
])
def test_bad_config_names_the_field(cfg: dict[str, Any], field: str) -> None:
    with pytest.raises(ServeConfigError, match=field.replace(".", r"\.")):
        parse_config(cfg)


def test_fallback_is_a_registry_policy_composed_from_conf_policy() -> None:
    """``conf/serve.yaml`` composes ``policy@fallback``: the router's fallback is the registry's policy."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rlroute.paths import CONF_DIR
    from rlroute.policies.heuristic import CacheAwarePolicy, SeedHeuristic
    from rlroute.policies.registry import make_policy

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        default = compose("serve")
        other = compose("serve", overrides=["policy@fallback=cache_aware", "fallback.cache_threshold=0.5"])
    fb = make_policy(parse_config(OmegaConf.to_container(default, resolve=True)).fallback)  # type: ignore[arg-type]
    assert isinstance(fb, SeedHeuristic) and (fb.complexity_threshold, fb.cache_margin) == (0.7, 0.3)
    fb = make_policy(parse_config(OmegaConf.to_container(other, resolve=True)).fallback)  # type: ignore[arg-type]
    assert isinstance(fb, CacheAwarePolicy) and fb.cache_threshold == 0.5
    assert parse_config({"pools": POOLS}).fallback == "heuristic"


def test_sglang_router_backend_uses_one_upstream_per_pool() -> None:
    pools = {p: {"router_url": f"http://127.0.0.1:{i}/"} for i, p in enumerate(("large", "small"), 1)}
    cfg = parse_config({"pools": pools, "backend": "sglang_router"})
    assert cfg.pools["large"].workers == ["http://127.0.0.1:1"] and cfg.pools["small"].workers == ["http://127.0.0.1:2"]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_single_probe_and_success_threshold() -> None:
    clock = FakeClock()
    b = Breaker(failure_threshold=2, success_threshold=2, timeout_s=10.0, clock=clock)
    b.failure()
    assert b.state == "closed" and b.acquire()
    b.failure()
    assert b.state == "open" and not b.allows() and not b.acquire()
    clock.t = 10.0
    assert b.state == "half_open" and b.allows() and b.half_opens == 1
    assert b.acquire() and not b.acquire() and not b.allows()  # one probe at a time
    b.success()
    assert b.state == "half_open" and b.acquire()  # 1 of 2 successes: still half-open, next probe allowed
    b.success()
    assert b.state == "closed" and b.failures == 0
    b.failure()
    b.failure()
    clock.t = 25.0
    assert b.acquire()
    b.failure()  # the probe failed: open for a whole timeout again
    assert b.state == "open"
    clock.t = 34.0
    assert b.state == "open"
    clock.t = 35.0
    assert b.acquire()
    b.cancel()  # the probe ended with the client's own error: no verdict, the next request may probe
    assert b.acquire()


def test_breaker_success_resets_the_failure_count() -> None:
    b = Breaker(failure_threshold=3, clock=FakeClock())
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.state == "closed"


def test_health_needs_consecutive_results() -> None:
    h = Health(failure_threshold=3, success_threshold=2)
    assert h.record(False) and h.record(False) and h.record(True)  # a pass resets the failures
    assert h.record(False) and h.record(False) and not h.record(False)
    assert not h.record(True) and not h.record(False) and not h.record(True) and h.record(True)


def test_backoff_grows_caps_and_jitters() -> None:
    import random

    p = RetryPolicy(initial_backoff_ms=100, multiplier=2.0, max_backoff_ms=250, jitter=0.0)
    assert [p.delay_s(k) for k in (1, 2, 3, 9)] == [0.1, 0.2, 0.25, 0.25]
    j = RetryPolicy(initial_backoff_ms=400, multiplier=1.0, jitter=0.5)
    rng = random.Random(0)
    ds = [j.delay_s(3, rng) for _ in range(200)]
    assert 0.2 <= min(ds) < 0.3 and 0.5 < max(ds) <= 0.6
    assert all(RetryPolicy.retryable(c) for c in (408, 429, 500, 502, 503, 504))
    assert not any(RetryPolicy.retryable(c) for c in (400, 401, 404, 413, 422))


@pytest.mark.parametrize("a,b,shared", [("x" * 1000, "x" * 1000 + "tail", 3), ("y" * 600 + "a", "y" * 600 + "b", 2),
                                        ("abc", "abc", 0)])
def test_blocks_share_exactly_the_common_prefix(a: str, b: str, shared: int) -> None:
    ba, bb = text_blocks(a), text_blocks(b)
    common = next((i for i, (x, y) in enumerate(zip(ba, bb, strict=False)) if x != y), min(len(ba), len(bb)))
    assert common == shared
    assert count_tokens(a) == -(-len(a) // 4)
    assert id_blocks(list(range(128)))[:1] == id_blocks(list(range(64)) + [7] * 64)[:1]


def test_lone_surrogate_prompt_is_hashable() -> None:
    assert count_tokens("\ud800" * 10) > 0 and text_blocks("\ud800" * 400, 16)


@pytest.mark.parametrize("make,reason", [
    (lambda p: None, "policy_missing"),
    (lambda p: str(p / "absent"), "policy_missing"),
    (lambda p: (p.mkdir(exist_ok=True), str(p))[1], "policy_missing"),  # a folder without its files
    (lambda p: (p.mkdir(exist_ok=True), (p / "manifest.json").write_text("{not json"), str(p))[2], "policy_corrupt"),
])
def test_untrusted_folders_become_fallback_reasons(tmp_path: Path, make: Any, reason: str) -> None:
    got = load(make(tmp_path / "p"), None)
    assert got.policy is None and got.reason == reason and got.extractor is not None


@pytest.mark.parametrize("argv,message", [
    (["serve", "backend=bogus"], "serve.backend"),
    (["worker", "faults.error_rate=3"], "faults.error_rate"),
])
def test_cli_config_errors_exit_2_naming_the_field(argv: list[str], message: str) -> None:
    import subprocess
    import sys

    from rlroute.cluster.live.launch import REPO

    out = subprocess.run([sys.executable, "-m", "rlroute.cli", *argv], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_watches_send_the_upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Health checks and scrapes carry the upstream ``Authorization`` (SGLang's ``--api-key`` guards ``/health``,
    ``/metrics`` and ``/get_load`` as well): a real server on loopback records what reaches it."""
    import asyncio

    from aiohttp import web

    from rlroute.serve.router import upstream_auth
    from rlroute.serve.upstream import Upstreams

    seen: list[tuple[str, str | None]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("authorization")))
        return web.Response(text="ok")

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/{path:.*}", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            monkeypatch.setenv("RLROUTE_UPSTREAM_API_KEY", "upstream-secret")
            cfg = parse_config({"pools": {"large": {"workers": [url]}, "small": {"workers": [url]}},
                                "health_successes": 1})
            up = Upstreams(cfg, upstream_auth(cfg))
            try:
                await up.refresh(health=True)
            finally:
                await up.stop()
        finally:
            await runner.cleanup()

    asyncio.run(run())
    paths = {p for p, _ in seen}
    assert {"/health", "/metrics", "/get_load"} <= paths, seen
    assert {a for _, a in seen} == {"Bearer upstream-secret"}, seen
