"""Router parts without processes: config validation, circuit breaker, request hashing, policy loading."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rlroute.serve.config import ServeConfigError, parse_config
from rlroute.serve.decision import load
from rlroute.serve.upstream import Breaker
from rlroute.worker.tokens import count_tokens, id_blocks, text_blocks

POOLS = {"large": {"workers": ["http://127.0.0.1:1"]}, "small": {"workers": ["http://127.0.0.1:2"]}}


@pytest.mark.parametrize("cfg,field", [
    ({"pools": {"large": POOLS["large"]}}, "serve.pools"),
    ({"pools": {**POOLS, "small": {"workers": []}}}, "serve.pools.small.workers"),
    ({"pools": {**POOLS, "small": {"workers": ["127.0.0.1:2"]}}}, "serve.pools.small"),
    ({"pools": POOLS, "backend": "nginx"}, "serve.backend"),
    ({"pools": POOLS, "backend": "sglang_router"}, "router_url"),
    ({"pools": POOLS, "retries": -1}, "serve.retries"),
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


def test_breaker_opens_half_opens_and_closes() -> None:
    b = Breaker(threshold=2, cooldown_s=0.05)
    b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allows()
    time.sleep(0.06)
    assert b.state == "half_open" and b.allows()
    b.failure()  # the trial failed: open again for a whole cooldown
    assert b.state == "open"
    time.sleep(0.06)
    b.success()
    assert b.state == "closed" and b.failures == 0


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
