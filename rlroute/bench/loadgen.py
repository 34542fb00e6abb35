"""Open-loop load generator for ``rlroute bench router``, run as its own process (aiohttp on uvloop).

``python -m rlroute.bench.loadgen --url U [--url U2 ...] --rate R --duration S --offset K`` sends ``/generate``
requests on a fixed schedule — request ``i`` is due at ``start + i / R`` whatever earlier answers did — and
measures each latency from its **scheduled** send time, not from when it was actually sent, so a generator
or server that falls behind shows as latency (no coordinated omission). Every request carries a fresh
prompt (``prompt(offset + i)``: ~600 characters, distinct from its first block on), so no cache or memo in
the path under test sees a prompt twice. Several URLs are used in turn (a direct arm spreads over workers).
The last stdout line is one JSON object: requests, ok, errors (by kind), achieved rate, the lateness of
the sends, and p50/p90/p99/max latency in ms.

A point counts as sustained only with 0 errors and achieved >= 98 % of the offered rate, where achieved =
answered requests / (last answer - first scheduled send).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any

WORDS = ("export", "timeout", "object", "store", "retry", "dashboard", "stale", "numbers", "nightly", "job",
         "queue", "worker", "latency", "cache", "prefix", "router", "token", "batch", "disk", "network")


def prompt(i: int) -> str:
    """A distinct ~600-character support-ticket prompt for index ``i`` (its first bytes already differ)."""
    words = " ".join(WORDS[(i * 7 + k * (i % 13 + 1)) % len(WORDS)] for k in range(70))
    return (f"Ticket #{i}: summarise in one sentence and say which team should handle it. {words}")[:600]


def percentiles(lat: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max of ``lat`` (seconds) in ms; None when empty."""
    if not lat:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(lat)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, int(round(p * (len(s) - 1)))))] * 1e3

    return {"p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": s[-1] * 1e3}


async def run(urls: list[str], rate: float, duration_s: float, offset: int, max_new: int, timeout_s: float,
              raw: bool = False) -> dict[str, Any]:
    """One open-loop phase (module doc); ``raw``: the answered requests' latencies (ms) too, as ``latencies_ms``."""
    import aiohttp

    n = max(1, int(rate * duration_s))
    bodies = [json.dumps({"text": prompt(offset + i), "sampling_params": {"max_new_tokens": max_new}}).encode()
              for i in range(n)]
    lat: list[float] = []
    late: list[float] = []
    errors: Counter[str] = Counter()
    last_done = 0.0
    headers = {"content-type": "application/json"}
    conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
        for u in urls:  # open keep-alive connections before the clock starts
            for _ in range(4):
                async with s.post(u + "/generate", data=json.dumps({"text": "warm", "sampling_params": {
                        "max_new_tokens": max_new}}), headers=headers) as r:
                    await r.read()
        clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds

        async def one(i: int, due: float) -> None:
            nonlocal last_done
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            late.append(clock() - due)
            try:
                async with s.post(urls[i % len(urls)] + "/generate", data=bodies[i], headers=headers) as r:
                    await r.read()
                    status = r.status
            except Exception as e:  # noqa: BLE001 - any failure is an error of this point
                errors[type(e).__name__] += 1
                return
            done = clock()
            if status != 200:
                errors[f"HTTP {status}"] += 1
                return
            lat.append(done - due)
            last_done = max(last_done, done)

        start = clock() + 0.1
        await asyncio.gather(*(one(i, start + i / rate) for i in range(n)))
    span = max(last_done - start, n / rate, 1e-9)
    out: dict[str, Any] = {"offered_rps": rate, "requests": n, "ok": len(lat), "errors": sum(errors.values()),
                           "error_kinds": dict(errors), "achieved_rps": len(lat) / span,
                           "send_late_ms": percentiles(late), **percentiles(lat)}
    if raw:
        out["latencies_ms"] = [round(x * 1e3, 4) for x in lat]
    return out


def sustained(res: dict[str, Any]) -> bool:
    """0 errors and >= 98 % of the offered rate achieved."""
    return res["errors"] == 0 and res["achieved_rps"] >= 0.98 * res["offered_rps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", action="append", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--offset", type=int, default=0, help="index of the first prompt (fresh prompts per phase)")
    ap.add_argument("--max-new", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--raw", action="store_true", help="add every answered request's latency (ms), latencies_ms")
    a = ap.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    t = time.time()
    with runner:
        res = runner.run(run(a.url, a.rate, a.duration, a.offset, a.max_new, a.timeout, a.raw))
    res["wall_s"] = time.time() - t
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
