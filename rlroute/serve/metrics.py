"""The router's Prometheus metrics (prometheus-client, one registry per app instance).

Names are ``rlroute_router_*``. Decisions are counted by action and source (``policy`` or ``fallback``),
fallbacks by reason, upstream attempts by outcome; latencies are histograms in seconds; in-flight
requests are a gauge per pool. ``rlroute_router_ood_drift{block}`` is the OOD guard's drift per feature
block (request, system, cache): RMS over recent decisions of the block's drift relative to its threshold
calibrated at export (above 1: that block alone would send the typical recent request to the fallback),
and with ``block="request_window"`` the guard's request window (the recent requests' largest standardised
shift from training, relative to its threshold: above 1 every request goes to the fallback).
"""

from __future__ import annotations

from typing import Any

import prometheus_client as prom
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_FAST = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
_SLOW = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class _Memo:
    """``labels(*values)`` remembered per value tuple (positional values only, as the router passes them):
    prometheus-client validates and stringifies the values and takes a lock on every call, ~1 us each, a
    dozen times per request on the data plane (py-spy: ~3 % of the router's busy samples)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: Any, **kw: Any) -> Any:
        if kw:
            return super().labels(*values, **kw)  # type: ignore[misc]
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = super().labels(*values)  # type: ignore[misc]
        return child


class Counter(_Memo, prom.Counter):
    pass


class Gauge(_Memo, prom.Gauge):
    pass


class Histogram(_Memo, prom.Histogram):
    pass


class RouterMetrics:
    """All router metrics in a private registry (several apps may live in one test process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.decisions = Counter("rlroute_router_decisions", "Routing decisions.", ["action", "source"], registry=r)
        self.fallbacks = Counter("rlroute_router_fallbacks", "Decisions made by the fallback heuristic, by reason.",
                                 ["reason"], registry=r)
        self.ood_unenforced = Counter("rlroute_router_ood_unenforced", "Decisions the OOD guard would have refused, "
                                      "made by the policy because serve.ood.enforce is false.", registry=r)
        self.requests = Counter("rlroute_router_requests", "Front requests by endpoint and status.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("rlroute_router_request_seconds", "Front request latency (to the response head).",
                                 ["endpoint"], buckets=_SLOW, registry=r)
        self.decision_latency = Histogram("rlroute_router_decision_seconds",
                                          "Features + policy + guard time per decision.", buckets=_FAST, registry=r)
        self.upstream = Counter("rlroute_router_upstream_attempts", "Upstream attempts by pool and outcome.",
                                ["pool", "outcome"], registry=r)
        self.upstream_latency = Histogram("rlroute_router_upstream_seconds", "Upstream response-head latency.",
                                          ["pool"], buckets=_SLOW, registry=r)
        self.inflight = Gauge("rlroute_router_inflight", "Requests in flight to each pool (read at scrape time).", ["pool"], registry=r)
        self.cross_pool = Counter("rlroute_router_cross_pool", "Requests sent to the other pool (first had none).",
                                  ["from_pool"], registry=r)
        self.warmups = Counter("rlroute_router_hybrid_warmups", "Pipelined hybrid warm-ups (prefill-only requests to "
                               "the small pool) by outcome.", ["outcome"], registry=r)
        self.reloads = Counter("rlroute_router_policy_reloads", "Policy reloads by result.", ["result"], registry=r)
        self.weight_update = Gauge("rlroute_router_weight_update_interruption_seconds",
                                   "Interruption of the last coordinated weight update.", ["pool"], registry=r)
        self.worker_up = Gauge("rlroute_router_worker_usable", "1 when a worker takes traffic.", ["pool", "worker"],
                               registry=r)
        self.ood_drift = Gauge("rlroute_router_ood_drift", "OOD drift per feature block relative to its calibrated "
                               "threshold (RMS over recent decisions; >1 means out of distribution).", ["block"],
                               registry=r)
        self.decision_log = Gauge("rlroute_router_decision_log_records", "Decision log records since start by "
                                  "result (written, dropped: writer queue full, error: not serialisable).",
                                  ["result"], registry=r)
        # per rollout arm (rlroute/serve/rollout.py): every arm's decisions, the acting arm's answers
        self.arm_decisions = Counter("rlroute_router_arm_decisions", "Decisions of each rollout arm (shadow ones "
                                     "included) by action and source.", ["arm", "action", "source"], registry=r)
        self.arm_fallbacks = Counter("rlroute_router_arm_fallbacks", "Fallback decisions of each rollout arm by reason "
                                     "(out_of_distribution: the OOD guard).", ["arm", "reason"], registry=r)
        self.arm_ttft = Histogram("rlroute_router_arm_ttft_seconds", "TTFT of the requests each arm acted on "
                                  "(modelled seconds).", ["arm"], buckets=_SLOW, registry=r)
        self.arm_e2e = Histogram("rlroute_router_arm_e2e_seconds", "End-to-end latency of the requests each arm "
                                 "acted on (modelled seconds).", ["arm"], buckets=_SLOW, registry=r)
        self.arm_cost = Counter("rlroute_router_arm_cost", "Cost of the requests each arm acted on (the router's "
                                "cost model).", ["arm"], registry=r)
        self.rollbacks = Counter("rlroute_router_rollbacks", "Automatic rollbacks of a canary by rule.",
                                 ["arm", "rule"], registry=r)
        self.recommended = Gauge("rlroute_router_recommended_instances", "Instances the configured scaler "
                                 "recommends per pool (serve.scaler; absent with scaler=none).", ["pool"], registry=r)
        self.forecast = Gauge("rlroute_router_forecast_arrival_rate", "The predictive scaler's forecast arrival "
                              "rate (req/s) at its horizon.", registry=r)
        self.breaker_open = Gauge("rlroute_router_breaker_open", "1 while a worker's circuit breaker is open or "
                                  "half-open.", ["pool", "worker"], registry=r)
        self.gc_frozen = Gauge("rlroute_router_gc_frozen_objects", "Objects in the garbage collector's permanent "
                               "generation (serve.gc.freeze), never traversed by a collection.", registry=r)
        for pool in ("large", "small"):
            self.inflight.labels(pool).set(0)

    def render(self) -> tuple[bytes, str]:
        """Prometheus text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
