"""Summary metrics of a simulation run (per request, per pool, overall) and their rich rendering."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlroute.cluster.sim.cluster import SimCluster
from rlroute.types import ACTION_NAMES, Completion


def _dist(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def summarize(completions: Sequence[Completion], cluster: SimCluster) -> dict[str, Any]:
    """Overall, per-action and per-pool figures of a finished run.

    Token hit rate is token-weighted (cached prompt tokens / prompt tokens); utilisation is the share of
    simulated time an instance spent running engine steps; throughput counts output tokens per second
    of simulated time from 0 to the last event.
    """
    ok = [c for c in completions if not c.failed]
    horizon = max(cluster.now, 1e-9)
    e2e = np.array([c.e2e for c in ok])
    ttft = np.array([c.ttft for c in ok])
    tpot = np.array([c.tpot for c in ok if c.output_tokens > 1])
    queue = np.array([c.queue_time for c in ok])
    prompt = sum(c.prompt_tokens for c in completions)
    cached = sum(c.cached_tokens for c in completions)
    qual = [c.quality_ok for c in ok if c.quality_ok is not None]
    reasons: dict[str, int] = {}
    for c in completions:
        if c.failed:
            key = (c.fail_reason or "unknown").split(" at t=")[0]
            reasons[key] = reasons.get(key, 0) + 1
    overall = {
        "requests": len(completions),
        "completed": len(ok),
        "failed": len(completions) - len(ok),
        "fail_reasons": reasons,
        "retries": int(sum(c.retries for c in completions)),
        "sim_time_s": cluster.now,
        "throughput_req_s": len(ok) / horizon,
        "throughput_out_tok_s": sum(c.output_tokens for c in ok) / horizon,
        "e2e_s": _dist(e2e),
        "ttft_s": _dist(ttft),
        "tpot_s": _dist(tpot),
        "queue_s": _dist(queue),
        "token_hit_rate": cached / prompt if prompt else 0.0,
        "cost_usd": float(sum(c.cost for c in completions)),
        "cost_per_request_usd": float(sum(c.cost for c in completions)) / max(1, len(completions)),
        "quality_ok_rate": float(np.mean(qual)) if qual else None,
    }
    actions = {}
    for a, name in enumerate(ACTION_NAMES):
        sel = [c for c in ok if int(c.action) == a]
        if sel:
            actions[name] = {"count": len(sel), "e2e_mean_s": float(np.mean([c.e2e for c in sel])),
                             "cost_usd": float(sum(c.cost for c in sel))}
    pools = {}
    for name, pool in cluster.pools.items():
        hit = sum(i.cache.hit_tokens for i in pool.instances)
        miss = sum(i.cache.miss_tokens for i in pool.instances)
        busy = sum(i.busy_time for i in pool.instances)
        pools[name] = {
            "instances": len(pool.instances),
            "profile": pool.profile.name,
            "profile_status": pool.profile.status,
            "kv_capacity_tokens": pool.kv_cap,
            "cache": {"eviction": pool.eviction, "ttl_s": pool.ttl_s, "mem_fraction_static": pool.mem_fraction_static},
            "stages_completed": sum(i.completed for i in pool.instances),
            "token_hit_rate": hit / (hit + miss) if hit + miss else 0.0,
            "evicted_tokens": sum(i.cache.evicted_tokens for i in pool.instances),
            "utilisation": busy / (horizon * len(pool.instances)),
            "cost_usd": pool.cost,
            "weight_updates": pool.weight_updates,
            "lost_cost_usd": pool.lost_cost,
            "lost_gpu_s": pool.lost_gpu_s,
            "failure_detection_delays_s": [round(d - f, 6) for f, d in pool.detections],
        }
    return {"overall": overall, "actions": actions, "pools": pools}


def render(summary: dict[str, Any], title: str = "rlroute sim") -> None:
    """Print the summary as rich tables."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    o = summary["overall"]
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("requests (completed / failed)", f"{o['requests']} ({o['completed']} / {o['failed']})")
    t.add_row("retries", str(o["retries"]))
    t.add_row("simulated time", f"{o['sim_time_s']:.1f} s")
    t.add_row("throughput", f"{o['throughput_req_s']:.2f} req/s, {o['throughput_out_tok_s']:.0f} out tok/s")
    for key, label in (("e2e_s", "end-to-end"), ("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("queue_s", "queue")):
        d = o[key]
        t.add_row(f"{label} mean / p50 / p95 / p99", f"{d['mean']:.3f} / {d['p50']:.3f} / {d['p95']:.3f} / {d['p99']:.3f} s")
    t.add_row("token hit rate", f"{o['token_hit_rate']:.3f}")
    t.add_row("cost", f"${o['cost_usd']:.4f} (${o['cost_per_request_usd'] * 1000:.4f} per 1k requests)")
    if o["quality_ok_rate"] is not None:
        t.add_row("quality ok rate", f"{o['quality_ok_rate']:.3f}")
    for reason, n in o["fail_reasons"].items():
        t.add_row(f"failed: {reason}", str(n))
    con.print(t)
    p = Table(title="pools", caption="; ".join(f"{n}: {d['profile']} ({d['profile_status']})"
                                                for n, d in summary["pools"].items()))
    for col in ("pool", "inst", "stages", "hit rate", "util", "evicted tok", "cost $"):
        p.add_column(col, justify="left" if col == "pool" else "right")
    for name, d in summary["pools"].items():
        p.add_row(name, str(d["instances"]), str(d["stages_completed"]), f"{d['token_hit_rate']:.3f}",
                  f"{d['utilisation']:.3f}", str(d["evicted_tokens"]), f"{d['cost_usd']:.4f}")
    con.print(p)
    if summary["actions"]:
        a = Table(title="actions")
        for col in ("action", "count", "e2e mean s", "cost $"):
            a.add_column(col, justify="right" if col != "action" else "left")
        for name, d in summary["actions"].items():
            a.add_row(name, str(d["count"]), f"{d['e2e_mean_s']:.3f}", f"{d['cost_usd']:.4f}")
        con.print(a)
