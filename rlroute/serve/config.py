"""The router's configuration (``conf/serve.yaml``), checked once at start-up into typed dataclasses.

Every field error names its key and what was expected, so a typo fails ``rlroute serve`` immediately
instead of surfacing as a routing surprise under traffic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rlroute.cluster.router_view import RouterViewConfig
from rlroute.serve.decision import OodSettings
from rlroute.types import POOLS

BACKENDS = ("workers", "sglang_router")


class ServeConfigError(ValueError):
    """A ``conf/serve.yaml`` field is missing or out of range; the message names it."""


@dataclass(slots=True)
class PoolConfig:
    """One pool: its worker URLs (``backend: workers``) or one sglang-router URL (``sglang_router``)."""

    name: str
    workers: list[str]
    router_url: str | None = None
    in_pool: dict[str, Any] | None = None  # conf/cluster/in_pool/ preset ({_target_, ...}); None = cache_aware
    profile: str | None = None  # serving profile: the cost model's GPU-seconds (cost.mode=gpu_seconds)


@dataclass(slots=True)
class ServeConfig:
    """Typed router settings; see ``conf/serve.yaml`` for the meaning and default of each."""

    pools: dict[str, PoolConfig]
    backend: str = "workers"
    host: str = "127.0.0.1"
    port: int = 8000
    policy_path: str | None = None
    inference_timeout_ms: float = 5.0
    fallback: str | dict[str, Any] = "heuristic"  # a policy registry name or a conf/policy config (_target_)
    ood: OodSettings = field(default_factory=OodSettings)
    allow_cross_pool: bool = True
    plan_tokens: int = 64
    block_size: int = 64
    scrape_interval_s: float = 0.5
    health_interval_s: float = 1.0
    health_timeout_s: float = 2.0
    breaker_failures: int = 3
    breaker_cooldown_s: float = 5.0
    retries: int = 2
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 300.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_connections: int = 512
    max_inflight: int = 2048
    admin_token: str | None = None
    admin_token_env: str = "RLROUTE_ADMIN_TOKEN"
    warmup_max_new_tokens: int = 1
    log_level: str = "warning"
    cost: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, float] = field(default_factory=dict)
    speedup: float = 1.0
    decision_log: int = 0
    router_view: RouterViewConfig = field(default_factory=RouterViewConfig)


def _num(c: dict[str, Any], key: str, default: Any, kind: type, minimum: float | None = None) -> Any:
    v = c.get(key, default)
    if v is None:
        return default
    try:
        out = kind(v)
    except (TypeError, ValueError) as e:
        raise ServeConfigError(f"serve.{key}: expected {kind.__name__}, got {v!r}") from e
    if minimum is not None and out < minimum:
        raise ServeConfigError(f"serve.{key}: expected >= {minimum}, got {v!r}")
    return out


def _fallback(spec: Any) -> str | dict[str, Any]:
    """``fallback``: a policy registry name, or a ``conf/policy`` entry (``serve.yaml`` composes
    ``policy@fallback: heuristic``); None: the seed heuristic."""
    if spec is None:
        return "heuristic"
    if isinstance(spec, str):
        from rlroute.policies.registry import POLICIES

        if spec not in POLICIES:
            raise ServeConfigError(f"serve.fallback: unknown policy {spec!r}; known: {', '.join(sorted(POLICIES))}")
        return spec
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise ServeConfigError(f"serve.fallback: expected a policy name or a conf/policy config with _target_ "
                               f"(e.g. policy@fallback=heuristic), got {spec!r}")
    return {str(k): v for k, v in spec.items()}


def parse_config(c: dict[str, Any]) -> ServeConfig:
    """Build a :class:`ServeConfig` from the resolved ``conf/serve.yaml`` mapping.

    Raises:
        ServeConfigError: naming the first bad field.
    """
    backend = str(c.get("backend", "workers"))
    if backend not in BACKENDS:
        raise ServeConfigError(f"serve.backend: expected one of {BACKENDS}, got {backend!r}")
    raw_pools = c.get("pools") or {}
    if not isinstance(raw_pools, dict) or set(raw_pools) != set(POOLS):
        raise ServeConfigError(f"serve.pools: expected exactly the pools {POOLS}, got {sorted(raw_pools)}")
    pools: dict[str, PoolConfig] = {}
    for name in POOLS:
        p = raw_pools[name] or {}
        workers = [str(u).rstrip("/") for u in (p.get("workers") or [])]
        router_url = p.get("router_url")
        if backend == "workers" and not workers:
            raise ServeConfigError(f"serve.pools.{name}.workers: expected at least one worker URL")
        if backend == "sglang_router":
            if not router_url:
                raise ServeConfigError(f"serve.pools.{name}.router_url: required with backend=sglang_router")
            workers = [str(router_url).rstrip("/")]  # one upstream: the pool's sglang-router
        for u in workers:
            if not u.startswith(("http://", "https://")):
                raise ServeConfigError(f"serve.pools.{name}: worker URL must start with http:// or https://, got {u!r}")
        profile = p.get("profile")
        in_pool = p.get("in_pool")
        if in_pool is not None and not (isinstance(in_pool, dict) and "_target_" in in_pool):
            raise ServeConfigError(f"serve.pools.{name}.in_pool: expected a conf/cluster/in_pool/ preset "
                                   f"({{_target_: ..., ...}}), got {in_pool!r}")
        pools[name] = PoolConfig(name, workers, router_url, dict(in_pool) if in_pool is not None else None,
                                 str(profile) if profile else None)
    env = str(c.get("admin_token_env") or "RLROUTE_ADMIN_TOKEN")
    slo = c.get("slo") or {}
    if not isinstance(slo, dict) or set(slo) - {"ttft_s", "tpot_s"}:
        raise ServeConfigError(f"serve.slo: expected {{ttft_s, tpot_s}}, got {slo!r}")
    o = c.get("ood") or {}
    if not isinstance(o, dict):
        raise ServeConfigError(f"serve.ood: expected a mapping (enabled, scale, range_margin, range_factor, halflife), got {o!r}")
    ood = OodSettings(enabled=bool(o.get("enabled", True)), scale=_num(o, "scale", 1.0, float, 1e-9),
                      range_margin=None if o.get("range_margin") is None else _num(o, "range_margin", 0.25, float, 0.0),
                      range_factor=None if o.get("range_factor") is None else _num(o, "range_factor", 4.0, float, 1.0 + 1e-9),
                      halflife=_num(o, "halflife", 100.0, float, 1.0),
                      record=str(o["record"]) if o.get("record") else None,
                      record_max=_num(o, "record_max", 100_000, int, 1))
    policy = c.get("policy") or {}
    return ServeConfig(
        pools=pools,
        backend=backend,
        host=str(c.get("host", "127.0.0.1")),
        port=_num(c, "port", 8000, int, 0),
        policy_path=str(policy["path"]) if policy.get("path") else None,
        inference_timeout_ms=_num(policy, "inference_timeout_ms", 5.0, float, 0.0),
        fallback=_fallback(c.get("fallback")),
        ood=ood,
        allow_cross_pool=bool(c.get("allow_cross_pool", True)),
        plan_tokens=_num(c.get("hybrid") or {}, "plan_tokens", 64, int, 1),
        block_size=_num(c, "block_size", 64, int, 1),
        scrape_interval_s=_num(c, "scrape_interval_s", 0.5, float, 0.01),
        health_interval_s=_num(c, "health_interval_s", 1.0, float, 0.01),
        health_timeout_s=_num(c, "health_timeout_s", 2.0, float, 0.01),
        breaker_failures=_num(c, "breaker_failures", 3, int, 1),
        breaker_cooldown_s=_num(c, "breaker_cooldown_s", 5.0, float, 0.0),
        retries=_num(c, "retries", 2, int, 0),
        connect_timeout_s=_num(c, "connect_timeout_s", 2.0, float, 0.01),
        request_timeout_s=_num(c, "request_timeout_s", 300.0, float, 0.01),
        max_body_bytes=_num(c, "max_body_bytes", 4 * 1024 * 1024, int, 1024),
        max_connections=_num(c, "max_connections", 512, int, 1),
        max_inflight=_num(c, "max_inflight", 2048, int, 1),
        admin_token=os.environ.get(env) or None,
        admin_token_env=env,
        warmup_max_new_tokens=_num(c, "warmup_max_new_tokens", 1, int, 0),
        log_level=str(c.get("log_level", "warning")),
        cost=dict(c.get("cost") or {}),
        slo={k: _num(slo, k, 1.0, float, 0.0) for k in slo},
        speedup=_num(c, "speedup", 1.0, float, 1e-6),
        decision_log=_num(c, "decision_log", 0, int, 0),
        router_view=_router_view(c.get("router_view")),
    )


def _router_view(raw: Any) -> RouterViewConfig:
    try:
        return RouterViewConfig.for_router(raw, "serve.router_view")
    except ValueError as e:
        raise ServeConfigError(str(e)) from e
