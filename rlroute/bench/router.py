"""``rlroute bench router``: latency the router adds over calling a worker directly, and its top rate.

Set-up (all real processes on loopback): one large and one small emulated worker with a large speed-up
and a short engine tick, so the worker's own latency is small, and ``rlroute serve`` in front of them
(with ``--policy`` an exported policy, else the heuristic fallback — both run features and the guard).
At each fixed request rate an open-loop generator (requests start on schedule whatever the answers do)
sends ``/generate`` requests (a ~600-character prompt, ``max_new_tokens=1``) for ``--duration`` seconds,
first straight to the workers (alternating, as the router would spread them), then through the router.
Added latency at percentile q = q(router) - q(direct). The highest sustained rate is the largest rate,
stepping up from the last fixed rate, at which the router answered >= 99 % of requests with status 200
and its throughput kept up with the offered rate (>= 95 %). The generator is bounded in count and time.

The load generator shares the machine's cores with the router and workers, so figures include that
contention; the JSON records the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from rlroute.bench import emit

PROMPT = ("You are a helpful assistant. Summarise the following support ticket in one sentence and say "
          "which team should handle it. Ticket: the nightly export job failed again with a timeout while "
          "writing to the object store; retries did not help and the dashboard shows stale numbers. ") * 2


async def _phase(urls: list[str], rate: float, duration_s: float, max_requests: int) -> dict[str, Any]:
    """Open-loop load at ``rate`` req/s for ``duration_s``; latencies of successful requests in seconds."""
    n = min(max_requests, max(1, int(rate * duration_s)))
    body = {"text": PROMPT, "sampling_params": {"max_new_tokens": 1}}
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    lat: list[float] = []
    errors = 0
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as c:
        for u in urls:  # open keep-alive connections before timing
            await c.post(u + "/generate", json=body)

        async def one(i: int, at: float) -> None:
            nonlocal errors
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            try:
                r = await c.post(urls[i % len(urls)] + "/generate", json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                lat.append(time.perf_counter() - t0)
            else:
                errors += 1

        start = time.perf_counter() + 0.05
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, start + i / rate) for i in range(n)))
        wall = time.perf_counter() - t0
    arr = np.asarray(lat) if lat else np.asarray([np.nan])
    return {"requests": n, "ok": len(lat), "errors": errors, "achieved_rps": len(lat) / max(wall - 0.05, 1e-9),
            "p50_ms": float(np.percentile(arr, 50) * 1e3), "p90_ms": float(np.percentile(arr, 90) * 1e3),
            "p99_ms": float(np.percentile(arr, 99) * 1e3), "mean_ms": float(np.mean(arr) * 1e3)}


def _sustained(res: dict[str, Any], rate: float) -> bool:
    return res["ok"] >= 0.99 * res["requests"] and res["achieved_rps"] >= 0.95 * rate


def main(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; see the module docstring."""
    ap = argparse.ArgumentParser(prog="rlroute bench router", description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="100,250,500", help="fixed request rates (req/s), comma-separated")
    ap.add_argument("--target-rate", type=float, default=500.0, help="rate whose p99 added latency is the headline")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per phase")
    ap.add_argument("--max-requests", type=int, default=5000, help="cap on requests per phase")
    ap.add_argument("--max-rate", type=float, default=3000.0, help="stop the sustained-rate search here")
    ap.add_argument("--policy", default=None, help="exported policy folder (default: heuristic fallback)")
    ap.add_argument("--speedup", type=float, default=10000.0, help="workers' speed-up factor")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    if args.target_rate not in rates:
        rates.append(args.target_rate)

    from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
    from rlroute.serve.launch import RouterProc

    tmp = Path(tempfile.mkdtemp(prefix="rlroute-bench-router-"))
    fast = ["min_tick_s=0.0002", "log_level=error"]
    fleet = WorkerFleet([WorkerSpec("large", "qwen3-235b-a22b-fp8__h100x8", args.speedup, fast),
                         WorkerSpec("small", "qwen3-4b__h100", args.speedup, fast)], tmp)
    fleet.start()
    rows: list[dict[str, Any]] = []
    try:
        overrides = ["log_level=error"] + ([f"policy.path={args.policy}"] if args.policy else [])
        with RouterProc(fleet.urls("large"), fleet.urls("small"), tmp / "router.log", overrides) as router:
            direct_urls = [w.url for w in fleet.workers]
            for rate in sorted(rates):
                d = asyncio.run(_phase(direct_urls, rate, args.duration, args.max_requests))
                r = asyncio.run(_phase([router.url], rate, args.duration, args.max_requests))
                rows.append({"rate": rate, "direct": d, "router": r,
                             "added_p50_ms": r["p50_ms"] - d["p50_ms"], "added_p99_ms": r["p99_ms"] - d["p99_ms"],
                             "sustained": _sustained(r, rate)})
                print(f"rate {rate:>6.0f}/s  direct p50/p99 {d['p50_ms']:.2f}/{d['p99_ms']:.2f} ms  "
                      f"router p50/p99 {r['p50_ms']:.2f}/{r['p99_ms']:.2f} ms  achieved {r['achieved_rps']:.0f}/s",
                      flush=True)
            best = max((row["rate"] for row in rows if row["sustained"]), default=0.0)
            rate = max(rates)
            while best >= rate and rate < args.max_rate:
                rate = min(args.max_rate, rate * 1.5)
                r = asyncio.run(_phase([router.url], rate, args.duration, args.max_requests))
                print(f"search {rate:>6.0f}/s  router p99 {r['p99_ms']:.2f} ms  achieved {r['achieved_rps']:.0f}/s "
                      f"ok {r['ok']}/{r['requests']}", flush=True)
                if not _sustained(r, rate):
                    break
                best = rate
    finally:
        fleet.stop()
    target = next(row for row in rows if row["rate"] == args.target_rate)
    result = {
        "value": round(target["added_p99_ms"], 3),
        "unit": "ms",
        "metric": f"p99 latency added by the router at {args.target_rate:.0f} req/s (router p99 - direct p99)",
        "target": "<= 2 ms at 500 req/s",
        "added_p50_ms_at_target": round(target["added_p50_ms"], 3),
        "max_sustained_rps": best,
        "policy": args.policy or "none (heuristic fallback)",
        "duration_s_per_phase": args.duration,
        "worker_speedup": args.speedup,
        "rates": rows,
    }
    emit("router", result, args.out)
    return result
