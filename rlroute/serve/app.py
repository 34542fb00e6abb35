"""The routing service's HTTP fronts (FastAPI): the data plane and, on its own listener, the admin API.

Data plane (:func:`create_app`): OpenAI and SGLang generation endpoints, health, metrics. Per request:
parse and validate the body (pydantic models shared with the worker, so the OpenAPI spec documents every
field and bad input is a 400 naming it, in OpenAI's error shape: :mod:`rlroute.serve.errors`), build a
:class:`~rlroute.types.Request` from the prompt's bytes (token estimate and chained block hashes, as the
worker computes them), then hand it to the :class:`~rlroute.serve.router.Router` (decide with the guarded
policy, forward; hybrid: plan-and-execute). An OpenAI list prompt (a batch of strings or of token-id
lists) is routed as one unit, by its first prompt, and forwarded whole.

Admin (:func:`create_admin_app`): the :mod:`rlroute.serve.admin` endpoints on a second app that shares the
same :class:`~rlroute.serve.router.Router` (``app.state.router``); ``rlroute serve`` runs it on
``admin_host:admin_port`` (loopback by default), so the data-plane listener never exposes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from fastapi.responses import JSONResponse, Response

from rlroute.export.ood import BLOCKS
from rlroute.serve import errors
from rlroute.serve.admin import admin_api
from rlroute.serve.config import ServeConfig
from rlroute.serve.errors import error_response
from rlroute.serve.router import Router, edit_chat, edit_completion, edit_generate
from rlroute.worker import schemas
from rlroute.worker.tokens import chat_prompt

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before any parsing."""

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


def create_app(cfg: ServeConfig) -> FastAPI:
    """Build the router app (upstream loop and client live with the server's event loop)."""
    router = Router(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await router.upstreams.refresh(health=True)
        router.upstreams.start()
        try:
            yield
        finally:
            router.slot.save_recorded()
            await router.upstreams.stop()
            await router.client.aclose()
            await router.proxy.close()

    app = FastAPI(title="rlroute router", version="0.1.0", lifespan=lifespan,
                  description="Routes LLM requests between a large and a small SGLang pool with a learned policy.")
    app.state.router = router

    @app.post("/generate", summary="SGLang native generation (text or input_ids; stream for SSE)")
    async def generate(body: schemas.GenerateRequest, request: FastAPIRequest) -> Response:
        req = router.build_request(body.text, body.input_ids, body.sampling_params.max_new_tokens, request.headers)
        return await router.route("generate", "/generate", body.model_dump(exclude_none=True), await request.body(),
                                  req, body.stream, edit_generate, router.forced_action(request.headers),
                                  request.headers)

    @app.post("/v1/chat/completions", summary="OpenAI chat completions (stream for SSE)")
    async def chat(body: schemas.ChatRequest, request: FastAPIRequest) -> Response:
        payload = body.model_dump(exclude_none=True)
        turn = sum(1 for m in payload["messages"] if m.get("role") == "assistant")
        req = router.build_request(chat_prompt(payload["messages"]), None, body.max_new(), request.headers, turn)
        return await router.route("chat", "/v1/chat/completions", payload, await request.body(), req, body.stream,
                                  edit_chat, router.forced_action(request.headers),
                                  request.headers)

    @app.post("/v1/completions", summary="OpenAI completions (a prompt or a list of prompts; stream for SSE)")
    async def completions(body: schemas.CompletionRequest, request: FastAPIRequest) -> Response:
        text, ids = body.first_prompt()
        req = router.build_request(text, ids, body.max_tokens, request.headers)
        return await router.route("completions", "/v1/completions", body.model_dump(exclude_none=True),
                                  await request.body(), req, body.stream, edit_completion,
                                  router.forced_action(request.headers),
                                  request.headers)

    @app.get("/health", summary="200 when some pool can serve, else 503")
    async def health() -> Response:
        ok = {p: router.upstreams.available(p) for p in router.upstreams.pools}
        if any(ok.values()):
            return JSONResponse({"status": "ok", "pools": ok})
        body = {**errors.error_body(503, "no pool has a usable worker"), "status": "unavailable", "pools": ok}
        return JSONResponse(body, status_code=503, headers={"retry-after": str(cfg.retry_after_s)})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        for name in router.upstreams.pools:
            for w in router.upstreams.workers(name):
                router.metrics.worker_up.labels(name, w.url).set(1.0 if w.usable else 0.0)
        if router.slot.drift.n:
            for block, v in zip(BLOCKS, router.slot.drift.values(), strict=True):
                router.metrics.ood_drift.labels(block).set(v)
        body, ctype = router.metrics.render()
        return Response(body, media_type=ctype)

    errors.install(app)
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)  # type: ignore[arg-type]
    return app


def create_admin_app(router: Router, max_body_bytes: int = 4 * 1024 * 1024) -> FastAPI:
    """The admin API (:data:`rlroute.serve.admin.admin_api`) as its own app over ``router``."""
    app = FastAPI(title="rlroute router admin", version="0.1.0",
                  description="Policy reload, coordinated weight updates and inspection (bearer token).")
    app.state.router = router
    app.include_router(admin_api)
    errors.install(app)
    app.add_middleware(BodyLimit, limit=max_body_bytes)  # type: ignore[arg-type]
    return app
