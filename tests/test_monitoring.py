"""Monitoring that ships: every metric the Grafana dashboard and the Prometheus alerts name is exported by the
registry the router builds or by a worker's; the router's scaler publishes its recommendation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from rlroute.cluster.base import ClusterState, InstanceState, PoolState
from rlroute.scaling.live import LiveScaling, decision_counts
from rlroute.scaling.reactive import ReactiveScaler
from rlroute.serve.config import ServeConfigError, parse_config
from rlroute.serve.metrics import RouterMetrics

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"(?<![\w:])((?:rlroute_|sglang:)[A-Za-z0-9_:]*)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "summary": ("_sum", "_count")}


def exported() -> set[str]:
    """Sample names the router's registry and an emulated worker's registry can expose."""
    from rlroute.worker.engine import Engine
    from rlroute.worker.metrics import WorkerMetrics
    from rlroute.worker.model import build_instance_model

    engine = Engine(build_instance_model("qwen3-4b__h100", {"policy": "lru"}, 0.88, 64), clock=lambda: 0.0)
    out = set()
    for reg in (RouterMetrics().registry, WorkerMetrics(engine, "qwen3-4b").registry):
        for fam in reg.collect():
            out.update(fam.name + s for s in SUFFIXES.get(fam.type, ("",)))
    return out


def named_in(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in NAME.findall(e)}


def dashboard_exprs() -> list[str]:
    dash = json.loads((ROOT / "deploy/grafana/rlroute.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_named_is_exported(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    names = named_in(exprs)
    assert len(names) >= 8
    missing = sorted(names - exported())
    assert not missing, f"{source} names metrics nobody exports: {missing}"


def test_dashboard_covers_the_operator_questions_and_docs_explain_every_panel_and_alert() -> None:
    text = " ".join(dashboard_exprs())
    for needed in ("rlroute_router_fallbacks_total", "rlroute_router_decisions_total", "sglang:cache_hit_rate",
                   "sglang:time_to_first_token_seconds_bucket", "sglang:e2e_request_latency_seconds_bucket",
                   "rlroute_router_breaker_open", "rlroute_router_ood_drift", "rlroute_router_recommended_instances"):
        assert needed in text
    doc = (ROOT / "docs/operate.md").read_text()
    dash = json.loads((ROOT / "deploy/grafana/rlroute.json").read_text())
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for title in [p["title"] for p in dash["panels"]] + [r["alert"] for g in rules["groups"] for r in g["rules"]]:
        assert title in doc, f"docs/operate.md does not explain {title!r}"


def state(loads: list[int]) -> ClusterState:
    insts = [InstanceState(index=i, queued=0, running=n) for i, n in enumerate(loads)]
    return ClusterState(time=0.0, pools={"small": PoolState("small", insts), "large": PoolState("large", [InstanceState(0)])})


def test_live_scaler_publishes_recommended_instances() -> None:
    m = RouterMetrics()
    lim = {"min_instances": 1, "max_instances": 8, "target_load": 10.0}
    live = LiveScaling(ReactiveScaler({"small": lim}), m.recommended, m.forecast)
    for _ in range(30):
        m.decisions.labels("small", "policy").inc()
    m.decisions.labels("hybrid", "fallback").inc()
    assert decision_counts(m.registry) == {"small": 30.0, "hybrid": 1.0}
    assert live.tick(0.0, state([30, 30]), decision_counts(m.registry)) == {"small": 6}
    text = generate_latest(m.registry).decode()
    assert 'rlroute_router_recommended_instances{pool="small"} 6.0' in text


def test_serve_config_takes_a_scaler_and_names_a_bad_one() -> None:
    base = {"pools": {"large": {"workers": ["http://127.0.0.1:1"]}, "small": {"workers": ["http://127.0.0.1:2"]}}}
    assert parse_config(base).scaler is None
    assert parse_config({**base, "scaler": {"_target_": None}}).scaler is None
    cfg = {"_target_": "rlroute.scaling.reactive.ReactiveScaler", "pools": {"small": {"max_instances": 4}}}
    assert parse_config({**base, "scaler": cfg}).scaler == cfg
    with pytest.raises(ServeConfigError, match=r"serve.scaler: .*max_instances is missing"):
        parse_config({**base, "scaler": {**cfg, "pools": {"small": {"min_instances": 1}}}})


def test_serve_runs_the_scaler_and_exports_its_gauge() -> None:
    """A real router app (no reachable worker: every worker unusable) ticks the configured scaler and its
    ``/metrics`` carries the recommendation (the pool's minimum while nothing is ready)."""
    import asyncio

    import httpx
    from aiohttp.test_utils import TestServer

    from rlroute.serve.app import create_app

    scaler = {"_target_": "rlroute.scaling.reactive.ReactiveScaler", "interval_s": 0.05,
              "pools": {"small": {"min_instances": 2, "max_instances": 4}}}
    cfg = parse_config({"pools": {"large": {"workers": ["http://127.0.0.1:1"]}, "small": {"workers": ["http://127.0.0.1:2"]}},
                        "health_timeout_s": 0.5, "scaler": scaler})

    async def scrape() -> str:
        server = TestServer(create_app(cfg), host="127.0.0.1")
        await server.start_server()
        try:
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=str(server.make_url(""))) as c:
                return (await c.get("/metrics")).text
        finally:
            await server.close()

    text = asyncio.run(scrape())
    assert 'rlroute_router_recommended_instances{pool="small"} 2.0' in text
    assert 'rlroute_router_breaker_open{pool="small",worker="http://127.0.0.1:2"} 0.0' in text
