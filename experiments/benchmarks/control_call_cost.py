"""Thread CPU of one control-plane call of the router's watches, over httpx and over aiohttp (the numbers behind
``rlroute/serve/upstream.py``'s choice of aiohttp for health checks and scrapes).

One emulated small worker at speed-up 10,000; on uvloop, 300 calls each after 20 warm-up calls, twice
alternating: a scrape (``LiveInstance.fetch``: ``/metrics`` + ``/get_load`` concurrently, parsed) and a health
check (``GET /health``), each over a pooled httpx ``AsyncClient`` and a pooled aiohttp ``ClientSession``.

    PYTHONPATH=$PWD .venv/bin/python experiments/benchmarks/control_call_cost.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop

from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
from rlroute.cluster.live.pool import LiveInstance, httpx_get


async def main(url: str) -> None:
    w = LiveInstance("small", 0, url)
    client = httpx.AsyncClient()
    session = aiohttp.ClientSession()

    async def aiohttp_get(u: str) -> bytes:
        async with session.get(u) as r:
            r.raise_for_status()
            return await r.read()

    async def httpx_health() -> Any:
        return (await client.get(url + "/health")).status_code

    async def aiohttp_health() -> Any:
        async with session.get(url + "/health") as r:
            await r.read()
            return r.status

    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("scrape over httpx", lambda: w.fetch(httpx_get(client))),
        ("scrape over aiohttp", lambda: w.fetch(aiohttp_get)),
        ("health over httpx", httpx_health),
        ("health over aiohttp", aiohttp_health),
    ]
    for name, call in calls * 2:
        for _ in range(20):
            await call()
        t, n = time.thread_time(), 300
        for _ in range(n):
            await call()
        print(f"{name}: {(time.thread_time() - t) / n * 1e6:.0f} us thread CPU per call", flush=True)
    await client.aclose()
    await session.close()


if __name__ == "__main__":
    fleet = WorkerFleet([WorkerSpec("small", "qwen3-4b__h100", 10000.0)], Path(tempfile.mkdtemp()))
    fleet.start()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(fleet.workers[0].url))
    finally:
        fleet.stop()
