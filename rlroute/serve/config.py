"""The router's configuration (``conf/serve.yaml``), checked once at start-up into typed dataclasses.

Every field error names its key and what was expected, so a typo fails ``rlroute serve`` immediately
instead of surfacing as a routing surprise under traffic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rlroute.cluster.router_view import RouterViewConfig
from rlroute.gcsettings import GEN0_THRESHOLD
from rlroute.serve.decision import OodSettings
from rlroute.serve.decisionlog import DecisionLogSettings
from rlroute.serve.reliability import RetryPolicy
from rlroute.serve.rollout import CandidateSpec, RollbackRule, RolloutSettings
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
    hybrid_mode: str = "plan_and_execute"
    block_size: int = 64
    scrape_interval_s: float = 0.5
    health_interval_s: float = 1.0
    health_timeout_s: float = 5.0
    health_failures: int = 3
    health_successes: int = 2
    breaker_failures: int = 10
    breaker_successes: int = 3
    breaker_cooldown_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout_s: float = 2.0
    first_byte_timeout_s: float = 60.0
    token_timeout_s: float = 0.25
    max_body_bytes: int = 4 * 1024 * 1024
    max_connections: int = 512
    max_inflight: int = 2048
    retry_after_s: int = 1
    admin_token: str | None = None
    admin_token_env: str = "RLROUTE_ADMIN_TOKEN"
    admin_host: str = "127.0.0.1"
    admin_port: int = 8001
    upstream_api_key: str | None = None
    upstream_api_key_env: str = "RLROUTE_UPSTREAM_API_KEY"
    warmup_max_new_tokens: int = 1
    log_level: str = "warning"
    cost: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, float] = field(default_factory=dict)
    speedup: float = 1.0
    decision_log: int = 0
    decision_file: DecisionLogSettings = field(default_factory=DecisionLogSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    router_view: RouterViewConfig = field(default_factory=RouterViewConfig)
    scaler: dict[str, Any] | None = None  # conf/scaler/ (None: scaler=none): publishes recommended instances
    gc_freeze: bool = True  # gc.freeze() once started (rlroute.gcsettings.tune_gc); conf/serve.yaml ``gc``
    gc_gen0_threshold: int = GEN0_THRESHOLD


def _num(c: dict[str, Any], key: str, default: Any, kind: type, minimum: float | None = None,
         where: str = "serve.") -> Any:
    key_name = where + key
    v = c.get(key, default)
    if v is None:
        return default
    try:
        out = kind(v)
    except (TypeError, ValueError) as e:
        raise ServeConfigError(f"{key_name}: expected {kind.__name__}, got {v!r}") from e
    if minimum is not None and out < minimum:
        raise ServeConfigError(f"{key_name}: expected >= {minimum}, got {v!r}")
    return out


SERVE_HYBRID_MODES = ("plan_and_execute", "pipelined")  # cascade needs a verifier the router does not have


def _hybrid_mode(c: dict[str, Any]) -> str:
    mode = c.get("mode", "plan_and_execute")
    if mode not in SERVE_HYBRID_MODES:
        raise ServeConfigError(f"serve.hybrid.mode: expected one of {SERVE_HYBRID_MODES}, got {mode!r}")
    return str(mode)


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
        raise ServeConfigError(f"serve.ood: expected a mapping (enabled, enforce, scale, range_margin, range_factor, halflife), got {o!r}")
    enforce = o.get("enforce", True)
    if not isinstance(enforce, bool):
        raise ServeConfigError(f"serve.ood.enforce: expected true or false, got {enforce!r}")
    ood = OodSettings(enabled=bool(o.get("enabled", True)), enforce=enforce, scale=_num(o, "scale", 1.0, float, 1e-9),
                      range_margin=None if o.get("range_margin") is None else _num(o, "range_margin", 0.25, float, 0.0),
                      range_factor=None if o.get("range_factor") is None else _num(o, "range_factor", 4.0, float, 1.0 + 1e-9),
                      halflife=_num(o, "halflife", 100.0, float, 1.0),
                      record=str(o["record"]) if o.get("record") else None,
                      record_max=_num(o, "record_max", 100_000, int, 1))
    policy = c.get("policy") or {}
    r = c.get("retry") or {}
    if not isinstance(r, dict) or set(r) - {"max_attempts", "initial_backoff_ms", "max_backoff_ms", "multiplier",
                                            "jitter"}:
        raise ServeConfigError(f"serve.retry: expected {{max_attempts, initial_backoff_ms, max_backoff_ms, multiplier, "
                               f"jitter}}, got {r!r}")
    retry = RetryPolicy(max_attempts=_num(r, "max_attempts", 5, int, 1, "serve.retry."),
                        initial_backoff_ms=_num(r, "initial_backoff_ms", 50.0, float, 0.0, "serve.retry."),
                        max_backoff_ms=_num(r, "max_backoff_ms", 30_000.0, float, 0.0, "serve.retry."),
                        multiplier=_num(r, "multiplier", 1.5, float, 1.0, "serve.retry."),
                        jitter=_num(r, "jitter", 0.2, float, 0.0, "serve.retry."))
    if retry.jitter > 1.0:
        raise ServeConfigError(f"serve.retry.jitter: expected a fraction in [0, 1], got {retry.jitter!r}")
    key_env = str(c.get("upstream_api_key_env") or "RLROUTE_UPSTREAM_API_KEY")
    host, admin_host = str(c.get("host", "127.0.0.1")), str(c.get("admin_host", "127.0.0.1"))
    port, admin_port = _num(c, "port", 8000, int, 0), _num(c, "admin_port", 8001, int, 0)
    if admin_port == port and port:
        raise ServeConfigError(f"serve.admin_port: the admin API needs its own listener, got the data-plane port {port}")
    return ServeConfig(
        pools=pools,
        backend=backend,
        host=host,
        port=port,
        admin_host=admin_host,
        admin_port=admin_port,
        policy_path=str(policy["path"]) if policy.get("path") else None,
        inference_timeout_ms=_num(policy, "inference_timeout_ms", 5.0, float, 0.0),
        fallback=_fallback(c.get("fallback")),
        ood=ood,
        allow_cross_pool=bool(c.get("allow_cross_pool", True)),
        plan_tokens=_num(c.get("hybrid") or {}, "plan_tokens", 64, int, 1),
        hybrid_mode=_hybrid_mode(c.get("hybrid") or {}),
        block_size=_num(c, "block_size", 64, int, 1),
        scrape_interval_s=_num(c, "scrape_interval_s", 0.5, float, 0.01),
        health_interval_s=_num(c, "health_interval_s", 1.0, float, 0.01),
        health_timeout_s=_num(c, "health_timeout_s", 5.0, float, 0.01),
        health_failures=_num(c, "health_failures", 3, int, 1),
        health_successes=_num(c, "health_successes", 2, int, 1),
        breaker_failures=_num(c, "breaker_failures", 10, int, 1),
        breaker_successes=_num(c, "breaker_successes", 3, int, 1),
        breaker_cooldown_s=_num(c, "breaker_cooldown_s", 60.0, float, 0.0),
        retry=retry,
        connect_timeout_s=_num(c, "connect_timeout_s", 2.0, float, 0.01),
        first_byte_timeout_s=_num(c, "first_byte_timeout_s", 60.0, float, 0.01),
        token_timeout_s=_num(c, "token_timeout_s", 0.25, float, 0.0),
        retry_after_s=_num(c, "retry_after_s", 1, int, 0),
        max_body_bytes=_num(c, "max_body_bytes", 4 * 1024 * 1024, int, 1024),
        max_connections=_num(c, "max_connections", 512, int, 1),
        max_inflight=_num(c, "max_inflight", 2048, int, 1),
        admin_token=os.environ.get(env) or None,
        admin_token_env=env,
        upstream_api_key=os.environ.get(key_env) or None,
        upstream_api_key_env=key_env,
        warmup_max_new_tokens=_num(c, "warmup_max_new_tokens", 1, int, 0),
        log_level=str(c.get("log_level", "warning")),
        cost=dict(c.get("cost") or {}),
        slo={k: _num(slo, k, 1.0, float, 0.0) for k in slo},
        speedup=_num(c, "speedup", 1.0, float, 1e-6),
        decision_log=_num(c, "decision_log", 0, int, 0),
        decision_file=_decision_file(c.get("decision_file")),
        rollout=_rollout(c.get("rollout")),
        router_view=_router_view(c.get("router_view")),
        scaler=_scaler(c.get("scaler")),
        **_gc(c.get("gc")),
    )


def _gc(raw: Any) -> dict[str, Any]:
    g = raw or {}
    if not isinstance(g, dict) or set(g) - {"freeze", "gen0_threshold"}:
        raise ServeConfigError(f"serve.gc: expected {{freeze, gen0_threshold}}, got {raw!r}")
    freeze = g.get("freeze", True)
    if not isinstance(freeze, bool):
        raise ServeConfigError(f"serve.gc.freeze: expected true or false, got {freeze!r}")
    return {"gc_freeze": freeze, "gc_gen0_threshold": _num(g, "gen0_threshold", GEN0_THRESHOLD, int, 1, "serve.gc.")}


def _decision_file(raw: Any) -> DecisionLogSettings:
    keys = set(DecisionLogSettings.__dataclass_fields__)
    if raw is None:
        return DecisionLogSettings()
    if not isinstance(raw, dict) or set(raw) - keys:
        raise ServeConfigError(f"serve.decision_file: expected a mapping with keys {sorted(keys)}, got {raw!r}")
    w = "serve.decision_file."
    return DecisionLogSettings(path=str(raw["path"]) if raw.get("path") else None,
                               max_bytes=_num(raw, "max_bytes", 64 * 1024 * 1024, int, 1024, w),
                               backups=_num(raw, "backups", 4, int, 0, w),
                               queue_size=_num(raw, "queue_size", 10_000, int, 1, w),
                               observations=bool(raw.get("observations", True)),
                               prompts=bool(raw.get("prompts", False)))


def _rollout(raw: Any) -> RolloutSettings:
    if raw is None:
        return RolloutSettings()
    keys = {"candidates", "epsilon", "seed", "rollback"}
    if not isinstance(raw, dict) or set(raw) - keys:
        raise ServeConfigError(f"serve.rollout: expected a mapping with keys {sorted(keys)}, got {raw!r}")
    w = "serve.rollout."
    eps = _num(raw, "epsilon", 0.0, float, 0.0, w)
    if eps > 1.0:
        raise ServeConfigError(f"serve.rollout.epsilon: expected a probability in [0, 1], got {eps!r}")
    rb = raw.get("rollback") or {}
    rkeys = set(RollbackRule.__dataclass_fields__)
    if not isinstance(rb, dict) or set(rb) - rkeys:
        raise ServeConfigError(f"serve.rollout.rollback: expected a mapping with keys {sorted(rkeys)}, got {rb!r}")
    w2 = w + "rollback."
    rule = RollbackRule(enabled=bool(rb.get("enabled", True)), window=_num(rb, "window", 200, int, 1, w2),
                        min_requests=_num(rb, "min_requests", 50, int, 1, w2),
                        p99_ttft_ratio=_num(rb, "p99_ttft_ratio", 1.5, float, 0.0, w2),
                        p99_ttft_slack_s=_num(rb, "p99_ttft_slack_s", 0.05, float, 0.0, w2),
                        fallback_rate_delta=_num(rb, "fallback_rate_delta", 0.10, float, 0.0, w2))
    cands = []
    for i, c in enumerate(raw.get("candidates") or []):
        ckeys = set(CandidateSpec.__dataclass_fields__)
        if not isinstance(c, dict) or set(c) - ckeys or not c.get("name") or not c.get("path"):
            raise ServeConfigError(f"serve.rollout.candidates[{i}]: expected {{name, path, mode, share, sticky}} "
                                   f"with name and path, got {c!r}")
        spec = CandidateSpec(str(c["name"]), str(c["path"]), str(c.get("mode", "shadow")),
                             _num(c, "share", 0.0, float, 0.0, f"{w}candidates[{i}]."), str(c.get("sticky", "session")))
        try:
            spec.check()
        except ValueError as e:
            raise ServeConfigError(f"serve.rollout.candidates[{i}]: {e}") from e
        cands.append(spec)
    if len({c.name for c in cands}) != len(cands):
        raise ServeConfigError(f"serve.rollout.candidates: names must differ, got {[c.name for c in cands]}")
    if sum(c.share for c in cands if c.mode != "shadow") > 1.0 + 1e-9:
        raise ServeConfigError("serve.rollout.candidates: the canary and ab shares add up to more than 1")
    return RolloutSettings(cands, eps, _num(raw, "seed", 0, int, None, w), rule)


def _scaler(raw: Any) -> dict[str, Any] | None:
    """``scaler``: a conf/scaler/ config; checked by building it once (None for scaler=none)."""
    if raw is None or not isinstance(raw, dict) or raw.get("_target_") is None:
        if raw is not None and not isinstance(raw, dict):
            raise ServeConfigError(f"serve.scaler: expected a conf/scaler/ config (scaler=reactive), got {raw!r}")
        return None
    from rlroute.scaling.base import build_scaler

    try:
        build_scaler(raw)
    except (TypeError, ValueError) as e:
        raise ServeConfigError(f"serve.scaler: {e}") from e
    return {str(k): v for k, v in raw.items()}


def _router_view(raw: Any) -> RouterViewConfig:
    try:
        return RouterViewConfig.for_router(raw, "serve.router_view")
    except ValueError as e:
        raise ServeConfigError(str(e)) from e
