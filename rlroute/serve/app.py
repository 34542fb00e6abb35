"""The routing service's HTTP fronts: the data plane (aiohttp) and, on its own listener, the admin API (FastAPI).

Data plane (:func:`create_app`, an ``aiohttp.web`` application): OpenAI and SGLang generation endpoints,
health, metrics and the OpenAPI document of those endpoints. Per request: read the body (over
``max_body_bytes``: 413), validate it with the pydantic models shared with the worker in one pass over the
bytes (``model_validate_json``; bad input is a 400 naming the field, in OpenAI's error shape:
:mod:`rlroute.serve.errors`), build a :class:`~rlroute.types.Request` from the prompt's bytes (token
estimate and chained block hashes, as the worker computes them), then hand it to the
:class:`~rlroute.serve.router.Router` (decide with the guarded policy, forward; hybrid: plan-and-execute).
An OpenAI list prompt (a batch of strings or of token-id lists) is routed as one unit, by its first prompt,
and forwarded whole.

aiohttp rather than uvicorn + FastAPI on the data plane: profiled with py-spy under ``rlroute bench
router``'s load (``experiments/benchmarks/router_profile.py``), uvicorn's ASGI cycle and FastAPI's routing,
dependency and response layers cost ~270 us of CPU per request and uvicorn writes a response's head and body
in two sends; aiohttp's server (C HTTP parser, the same library as the upstream client) answers a body in
one send (``docs/serve.md`` has the before / after table).

Admin (:func:`create_admin_app`): the :mod:`rlroute.serve.admin` endpoints on a FastAPI app that shares the
same :class:`~rlroute.serve.router.Router` (``app.state.router``); ``rlroute serve`` runs it on
``admin_host:admin_port`` (loopback by default), so the data-plane listener never exposes it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import aclosing
from typing import Any

import orjson
from aiohttp import web
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from rlroute.export.ood import BLOCKS
from rlroute.serve import errors
from rlroute.serve.admin import admin_api
from rlroute.serve.config import ServeConfig
from rlroute.serve.errors import error_response, invalid_request, web_error
from rlroute.serve.router import Relay, Router, edit_chat, edit_completion, edit_generate, request_id
from rlroute.worker import schemas
from rlroute.worker.tokens import chat_prompt

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware of the admin app: a request body over ``limit`` bytes gets 413 before any parsing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
        chunks: list[bytes] = []
        size = 0
        more = not too_big
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.limit:
                too_big = True
                break
        if too_big:
            resp = error_response(413, f"request body exceeds {self.limit} bytes")
            await resp(scope, receive, send)
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


ENDPOINTS = {"/generate": "generate", "/v1/chat/completions": "chat", "/v1/completions": "completions"}
ROUTER = web.AppKey("router", Router)
"""The data-plane app's :class:`~rlroute.serve.router.Router` (``app[ROUTER]``)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error the data plane answers in OpenAI's shape: aiohttp's own (404, 405, 413 over the body
    limit) and any crash (500, no internals)."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        text = e.text or e.reason
        if e.status == 413:
            text = f"request body exceeds {request.app[ROUTER].cfg.max_body_bytes} bytes"
        if request.method == "POST" and request.path in ENDPOINTS:
            router = request.app[ROUTER]
            router.log_refused(ENDPOINTS[request.path], e.status, text, request_id(request.headers))
        return web_error(e.status, text)
    except Exception as e:  # noqa: BLE001 - a crash is a 500 for the client, never a dropped connection
        return web_error(500, f"internal error: {type(e).__name__}")


async def _send(request: web.Request, out: web.Response | Relay) -> web.StreamResponse:
    """The router's answer to the client; a stream is relayed chunk by chunk as it comes."""
    if isinstance(out, web.Response):
        return out
    resp = web.StreamResponse(status=200, headers=out.headers)
    async with aclosing(out.chunks) as chunks:  # a client gone mid-stream closes the upstream side too
        await resp.prepare(request)
        async for chunk in chunks:
            await resp.write(chunk)
    await resp.write_eof()
    return resp


def _validate(model: type[BaseModel], raw: bytes) -> tuple[Any, web.Response | None]:
    """``model`` from the body's bytes, or the 400 (OpenAI shape, the field named) when they do not fit."""
    try:
        return model.model_validate_json(raw), None
    except ValidationError as e:
        message, param = invalid_request(e.errors(include_url=False))
        return None, web_error(400, message, param)


def openapi() -> dict[str, Any]:
    """The data plane's OpenAPI 3.1 document, its request schemas generated from the pydantic models."""
    from pydantic.json_schema import models_json_schema

    models = (schemas.GenerateRequest, schemas.ChatRequest, schemas.CompletionRequest)
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    error = {"description": "OpenAI-shaped error: {\"error\": {\"message\", \"type\", \"param\", \"code\"}}"}

    def post(model: type[BaseModel], summary: str) -> dict[str, Any]:
        body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
        return {"post": {"summary": summary, "requestBody": {"required": True, "content": body},
                         "responses": {"200": {"description": "the worker's answer (JSON, or SSE when streamed)"},
                                       "400": error, "413": error, "429": error, "503": error}}}

    def get(summary: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": {"200": {"description": "OK"}, "503": error}}}

    return {"openapi": "3.1.0",
            "info": {"title": "rlroute router", "version": "0.1.0",
                     "description": "Routes LLM requests between a large and a small SGLang pool with a learned policy."},
            "paths": {"/generate": post(schemas.GenerateRequest, "SGLang native generation (text or input_ids; "
                                                                 "stream for SSE)"),
                      "/v1/chat/completions": post(schemas.ChatRequest, "OpenAI chat completions (stream for SSE)"),
                      "/v1/completions": post(schemas.CompletionRequest, "OpenAI completions (a prompt or a list "
                                                                         "of prompts; stream for SSE)"),
                      "/health": get("200 when some pool can serve, else 503"),
                      "/metrics": get("Prometheus metrics")},
            "components": {"schemas": defs.get("$defs", {})}}


def create_app(cfg: ServeConfig) -> web.Application:
    """Build the data plane (its upstream watches and clients live with the serving event loop)."""
    router = Router(cfg)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        await router.upstreams.refresh(health=True)
        router.upstreams.start()
        if router.log is not None:
            router.log.start()
        scaling = _scaling_task(router)
        yield
        if scaling is not None:
            scaling.cancel()
        router.slot.save_recorded()
        if router.log is not None:
            await asyncio.to_thread(router.log.close)
        await router.upstreams.stop()
        await router.client.aclose()
        await router.proxy.close()

    def refused(endpoint: str, request: web.Request, bad: web.Response) -> web.Response:
        """A malformed body's 400, logged (when the decision log is on) before it is answered."""
        if router.log is not None:
            assert isinstance(bad.body, bytes)
            router.log_refused(endpoint, bad.status, orjson.loads(bad.body)["error"]["message"],
                               request_id(request.headers))
        return bad

    async def generate(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body, bad = _validate(schemas.GenerateRequest, raw)
        if bad is not None:
            return refused("generate", request, bad)
        req = router.build_request(body.text, body.input_ids, body.sampling_params.max_new_tokens, request.headers)
        return await _send(request, await router.route(
            "generate", "/generate", body, raw, req, body.stream, edit_generate,
            router.forced_action(request.headers), request.headers))

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body, bad = _validate(schemas.ChatRequest, raw)
        if bad is not None:
            return refused("chat", request, bad)
        payload = body.model_dump(exclude_none=True)
        turn = sum(1 for m in payload["messages"] if m.get("role") == "assistant")
        req = router.build_request(chat_prompt(payload["messages"]), None, body.max_new(), request.headers, turn)
        return await _send(request, await router.route(
            "chat", "/v1/chat/completions", payload, raw, req, body.stream, edit_chat,
            router.forced_action(request.headers), request.headers))

    async def completions(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body, bad = _validate(schemas.CompletionRequest, raw)
        if bad is not None:
            return refused("completions", request, bad)
        text, ids = body.first_prompt()
        req = router.build_request(text, ids, body.max_tokens, request.headers)
        return await _send(request, await router.route(
            "completions", "/v1/completions", body, raw, req, body.stream,
            edit_completion, router.forced_action(request.headers), request.headers))

    async def health(request: web.Request) -> web.StreamResponse:
        ok = {p: router.upstreams.available(p) for p in router.upstreams.pools}
        if any(ok.values()):
            return web.json_response({"status": "ok", "pools": ok}, dumps=_dumps)
        body = {**errors.error_body(503, "no pool has a usable worker"), "status": "unavailable", "pools": ok}
        return web.json_response(body, status=503, headers={"retry-after": str(cfg.retry_after_s)}, dumps=_dumps)

    async def metrics(request: web.Request) -> web.StreamResponse:
        for name in router.upstreams.pools:  # in-flight counts are the monitor's, read here (not per request)
            router.metrics.inflight.labels(name).set(sum(w.inflight for w in router.upstreams.workers(name)))
            for w in router.upstreams.workers(name):
                router.metrics.worker_up.labels(name, w.url).set(1.0 if w.usable else 0.0)
                router.metrics.breaker_open.labels(name, w.url).set(0.0 if w.breaker.state == "closed" else 1.0)
        if router.slot.drift.n:
            for block, v in zip(BLOCKS, router.slot.drift.values(), strict=True):
                router.metrics.ood_drift.labels(block).set(v)
        window = router.slot.window()
        if window is not None:
            router.metrics.ood_drift.labels("request_window").set(window)
        if router.log is not None:
            for result, n in (("written", router.log.written), ("dropped", router.log.dropped),
                              ("error", router.log.errors)):
                router.metrics.decision_log.labels(result).set(n)
        router.metrics.gc_frozen.set(gc.get_freeze_count())
        body, ctype = router.metrics.render()
        return web.Response(body=body, headers={"content-type": ctype})

    spec = orjson.dumps(openapi())

    async def openapi_json(request: web.Request) -> web.StreamResponse:
        return web.Response(body=spec, content_type="application/json")

    async def docs(request: web.Request) -> web.StreamResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        page = get_swagger_ui_html(openapi_url="/openapi.json", title="rlroute router - Swagger UI")
        return web.Response(body=page.body, content_type="text/html")

    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=[openai_errors])
    app[ROUTER] = router
    app.cleanup_ctx.append(lifespan)
    app.add_routes([web.post("/generate", generate), web.post("/v1/chat/completions", chat),
                    web.post("/v1/completions", completions), web.get("/health", health),
                    web.get("/metrics", metrics), web.get("/openapi.json", openapi_json), web.get("/docs", docs)])
    return app


def _scaling_task(router: Router) -> asyncio.Task[None] | None:
    """The configured scaler's loop (``serve.scaler``; :mod:`rlroute.scaling.live`), or None without one."""
    if router.cfg.scaler is None:
        return None
    from rlroute.scaling.base import build_scaler
    from rlroute.scaling.live import LiveScaling, decision_counts

    scaler = build_scaler(router.cfg.scaler)
    assert scaler is not None
    m = router.metrics
    live = LiveScaling(scaler, m.recommended, m.forecast)

    async def loop() -> None:
        while True:
            try:
                live.tick(router.upstreams.now(), router.upstreams.state(), decision_counts(m.registry))
            except Exception:  # a scaler bug must not stop serving; the gauge keeps its last value
                logging.getLogger(__name__).exception("scaler tick failed")
            await asyncio.sleep(scaler.interval_s)

    return asyncio.get_running_loop().create_task(loop())


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def create_admin_app(router: Router, max_body_bytes: int = 4 * 1024 * 1024) -> FastAPI:
    """The admin API (:data:`rlroute.serve.admin.admin_api`) as its own app over ``router``."""
    app = FastAPI(title="rlroute router admin", version="0.1.0",
                  description="Policy reload, coordinated weight updates and inspection (bearer token).")
    app.state.router = router
    app.include_router(admin_api)
    errors.install(app)
    app.add_middleware(BodyLimit, limit=max_body_bytes)  # type: ignore[arg-type]
    return app
