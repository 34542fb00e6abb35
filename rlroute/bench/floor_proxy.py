"""The floor of ``rlroute serve``'s HTTP stack: a pass-through proxy with nothing of a router in it.

``python -m rlroute.bench.floor_proxy --port P --worker U [--worker U2 ...]`` serves ``POST /generate`` with
the same parts as ``rlroute serve``'s data plane — ``aiohttp.web`` on uvloop in front, one pooled aiohttp
``ClientSession`` (keep-alive, no cookie jar) to the workers behind, the garbage collector tuned as the router
tunes it — and does nothing else: the client's bytes go to the next worker in turn, the worker's status,
content type and bytes come back. No validation, decision, state, retries, metrics or logging.

``rlroute bench router`` runs it as its ``floor`` arm: what a Python router on this stack adds before it
does any routing. If the floor alone adds more latency than a target allows, no change to rlroute's own code
can meet that target on this stack.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any


def app(workers: list[str]) -> Any:
    """The pass-through ``aiohttp.web`` application over ``workers`` (base URLs, used in turn)."""
    import aiohttp
    from aiohttp import web

    targets = itertools.cycle([f"{w.rstrip('/')}/generate" for w in workers])
    state: dict[str, aiohttp.ClientSession] = {}

    async def start(_: web.Application) -> None:
        state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                                                 cookie_jar=aiohttp.DummyCookieJar())

    async def stop(_: web.Application) -> None:
        await state["session"].close()

    async def generate(request: web.Request) -> web.Response:
        body = await request.read()
        async with state["session"].post(next(targets), data=body,
                                         headers={"content-type": "application/json"}) as up:
            data = await up.read()
            return web.Response(body=data, status=up.status, content_type=up.content_type)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    a = web.Application()
    a.on_startup.append(start)
    a.on_cleanup.append(stop)
    a.router.add_post("/generate", generate)
    a.router.add_get("/health", health)
    return a


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rlroute.bench.floor_proxy", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--worker", action="append", required=True, help="a worker's base URL (repeatable)")
    args = ap.parse_args(argv)
    import uvloop
    from aiohttp import web

    from rlroute.gcsettings import tune_gc

    uvloop.install()
    application = app(args.worker)

    async def tuned(_: Any) -> None:
        tune_gc()

    application.on_startup.append(tuned)
    web.run_app(application, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
