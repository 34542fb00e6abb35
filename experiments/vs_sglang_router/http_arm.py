"""The HTTP-router arm of the side-by-side: every request goes to a real ``rlroute serve`` process over HTTP.

Same emulated workers, same trace windows, same open-loop replay (:func:`rlroute.bench.replay.replay`, the
client that drives the sglang-router arms, non-streaming ``/generate`` with text standing for the trace's
blocks) and the same metrics as the other arms. One difference, as a client sends it and as the policy was
trained (feature schema v2: ``request.output_tokens`` is the client's cap): this arm sends the workload's
cap as ``max_new_tokens`` and the trace's reply length as ``x-rlroute-output-tokens``, which ``rlroute
serve`` passes on to the worker (``replay(caps=True)``); sglang-router does not pass that header on, so
its arms send the trace length as the cap. The workers' admission then reserves from the cap for this arm
(SGLang's ``new_token_ratio`` reservation) and from the exact length for the sglang arms — a handicap for
this arm, if any. A fresh router is started per arm run (its approximate
prefix trees then start as empty as the flushed workers' caches, as ``LiveCluster`` does in the in-process
arm) and stopped by PID afterwards.

Per request the router's decision comes back in its ``x-rlroute-*`` headers: the action, who made it
(``policy`` or ``fallback``) and why (``out_of_distribution``, ``pool_unavailable``, ...), so every row
carries its fallback reason and the arm reports its fallback and OOD rates beside its figures.

Approximations (stated where they matter): a hybrid's modelled latency is its answer stage's (the plan
stage's ``meta_info`` stays inside the router), and its cost adds the plan stage at the large pool's
prices for the prompt (uncached) plus ``x-rlroute-plan-tokens`` output tokens.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rlroute.bench.replay import replay
from rlroute.cluster.live.launch import WorkerFleet
from rlroute.serve.launch import RouterProc
from rlroute.types import ACTION_NAMES, Action, Request

ADMIN_TOKEN = "vs-sglang-router"  # the router's admin API (decision log) for this harness only, on loopback


def start_router(fleet: WorkerFleet, policy: Path | None, log: Path, overrides: list[str]) -> RouterProc:
    """``rlroute serve`` over the fleet's pools (cache_aware inside each pool, as the in-process arm), with a
    decision log long enough for a whole run (the observations the router decided on, for the guard's
    diagnosis: :func:`save_decisions`)."""
    args = [*(f"policy.path={policy}" for _ in [0] if policy is not None), "scrape_interval_s=0.5",
            "decision_log=20000", *overrides]
    return RouterProc(fleet.urls("large"), fleet.urls("small"), log, args, env={"RLROUTE_ADMIN_TOKEN": ADMIN_TOKEN},
                      startup_timeout_s=fleet.timeout)


def save_decisions(router: RouterProc, path: Path) -> None:
    """The router's decision log (``GET /admin/decisions``: the observation each decision was made on, its
    source and fallback reason) as ``path`` (.npz: ``obs``, ``reason``, ``source``, ``id``)."""
    import httpx
    import numpy as np

    rows = httpx.get(router.admin_url + "/admin/decisions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                     timeout=60).json()["decisions"]
    rows = [d for d in rows if d["obs"] is not None]
    np.savez_compressed(path, obs=np.array([d["obs"] for d in rows], dtype=np.float32),
                        reason=np.array([str(d["reason"]) for d in rows]), source=np.array([d["source"] for d in rows]),
                        id=np.array([d["id"] for d in rows]))


def run_http(url: str, reqs: list[Request], speedup: float, cost_model: Any,
             stream: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """Open-loop replay of ``reqs`` through the router at ``url``; one row per request (its
    :class:`~rlroute.bench.replay.ReplayRecord` under ``record``). ``stream``: ids of the requests that
    stream (SSE; the fault run's), the others ask for one JSON answer."""
    recs = asyncio.run(replay(url, reqs, 1.0 / speedup, stream=stream, caps=True))
    rows = []
    for req, rec in zip(reqs, recs, strict=True):
        h = rec.headers
        name = h.get("x-rlroute-action")
        act = Action(ACTION_NAMES.index(name)) if name in ACTION_NAMES else Action.SMALL
        pool = h.get("x-rlroute-pool", "large" if act == Action.LARGE else "small")
        cost = 0.0
        if rec.ok:
            cost = cost_model.request_cost(pool, rec.prompt_tokens, rec.cached_tokens, rec.output_tokens)
            if act == Action.HYBRID:  # the plan stage (approximation, see the module docstring)
                cost += cost_model.request_cost("large", req.input_len, 0, int(h.get("x-rlroute-plan-tokens", 0)))
        q = req.quality
        rows.append({"id": req.id, "action": int(act), "ok": rec.ok, "ttft": rec.model_ttft_s, "e2e": rec.model_e2e_s,
                     "cached": rec.cached_tokens, "prompt": rec.prompt_tokens, "cost": cost,
                     "quality": bool(q.ok[int(act)]) if q is not None else False, "error": rec.error,
                     "source": h.get("x-rlroute-source", "none"), "reason": h.get("x-rlroute-fallback-reason"),
                     "retries": max(int(h.get("x-rlroute-attempts", "1")) - 1, 0), "record": rec})
    return rows


def router_counts(url: str) -> dict[str, float]:
    """The router's own ``/metrics`` counts: decisions by source and fallbacks by reason."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == "rlroute_router_decisions_total":
                key = f"decisions_{s.labels['source']}"
            elif s.name == "rlroute_router_fallbacks_total":
                key = f"fallback_{s.labels['reason']}"
            elif s.name == "rlroute_router_ood_drift":
                key = f"ood_drift_{s.labels['block']}"
            else:
                continue
            out[key] = out.get(key, 0.0) + s.value
    return out


def arm(fleet: WorkerFleet, policy: Path | None, logs: Path, name: str, overrides: list[str], speedup: float,
        cost_model: Any) -> Any:
    """An arm function ``(reqs, stream=frozenset()) -> rows`` that starts a router, replays, records its
    counts, stops it."""
    counts: list[dict[str, float]] = []

    def run(reqs: list[Request], stream: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
        router = start_router(fleet, policy, logs / f"router-{name}-{len(counts)}.log", overrides)
        try:
            rows = run_http(router.url, reqs, speedup, cost_model, stream)
            save_decisions(router, logs / f"decisions-{name}-{len(counts)}.npz")
            counts.append(router_counts(router.url))
        finally:
            router.stop()
        return rows

    run.counts = counts  # type: ignore[attr-defined]
    return run


def fallback_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Shares of requests the policy did not decide (``fallback_rate``), of those refused as out of
    distribution (``ood_rate``) and, per fallback reason, ``fb_<reason>``."""
    n = len(rows)
    out = {"fallback_rate": sum(r.get("source") == "fallback" for r in rows) / n,
           "ood_rate": sum(r.get("reason") == "out_of_distribution" for r in rows) / n}
    for reason in sorted({str(r["reason"]) for r in rows if r.get("source") == "fallback" and r.get("reason")}):
        out[f"fb_{reason}"] = sum(r.get("source") == "fallback" and r.get("reason") == reason for r in rows) / n
    return out
