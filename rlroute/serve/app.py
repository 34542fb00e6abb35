"""The routing service's HTTP front (FastAPI): OpenAI and SGLang generation endpoints, health, metrics.

Per request: parse and validate the body (pydantic models shared with the worker, so the OpenAPI spec
documents every field and bad input is a 422 naming it), build a :class:`~rlroute.types.Request` from the
prompt's bytes (token estimate and chained block hashes, as the worker computes them), decide with the
guarded policy, then forward — or, for hybrid, run plan-and-execute: a plan of ``plan_tokens`` from the
large pool, then the small pool answers with the plan placed after the prompt (after, not before, so the
prompt's prefix blocks stay cacheable on the small pool). Admin endpoints live in
:mod:`rlroute.serve.admin`.
"""

from __future__ import annotations

import hmac
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from fastapi.responses import JSONResponse, Response

from rlroute.export.ood import BLOCKS
from rlroute.serve.config import ServeConfig
from rlroute.serve.decision import PolicySlot
from rlroute.serve.intake import SESSION_HEADER, SessionTable, client_request
from rlroute.serve.metrics import RouterMetrics
from rlroute.serve.proxy import NoUpstream, Proxy, unavailable
from rlroute.serve.upstream import Upstreams
from rlroute.types import ACTION_NAMES, Action, Request
from rlroute.worker import schemas
from rlroute.worker.tokens import chat_prompt, count_tokens

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
            resp = JSONResponse({"error": {"message": f"request body exceeds {self.limit} bytes", "code": 413}},
                                status_code=413)
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


class Router:
    """Everything one router process holds (built by :func:`create_app`)."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        limits = httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections)
        timeout = httpx.Timeout(cfg.request_timeout_s, connect=cfg.connect_timeout_s)
        self.client = httpx.AsyncClient(limits=limits, timeout=timeout)
        self.metrics = RouterMetrics()
        self.upstreams = Upstreams(cfg, self.client)
        self.slot = PolicySlot(cfg.policy_path, cfg.inference_timeout_ms, cfg.fallback, cfg.ood)
        self.transport = httpx.AsyncHTTPTransport(limits=limits)
        self.proxy = Proxy(self.upstreams, self.transport, timeout, self.metrics, cfg.retries, cfg.allow_cross_pool)
        self.ids = itertools.count()
        self.sessions = SessionTable()
        # Decisions kept for /admin/decisions (the parity bench reads the vectors the router decided on).
        self.decisions: deque[dict[str, Any]] | None = deque(maxlen=cfg.decision_log) if cfg.decision_log else None

    def forced_action(self, headers: Any) -> Action | None:
        """The action named by ``x-rlroute-force-action`` when the request carries the admin bearer token
        (tests and the parity bench drive the pools with given actions); None otherwise."""
        name = headers.get("x-rlroute-force-action")
        if name is None or not self.cfg.admin_token:
            return None
        auth = headers.get("authorization") or ""
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.cfg.admin_token}".encode()):
            return None
        try:
            return Action(ACTION_NAMES.index(name))
        except ValueError:
            return None

    def build_request(self, text: str | None, ids: list[int] | None, max_new: int, headers: Any = None,
                      turn: int | None = None, remember: bool = True) -> Request:
        """The routing view of what the client sent (:func:`rlroute.serve.intake.client_request`);
        ``remember``: count it in its session (False for ``/admin/observe`` unless asked)."""
        session = headers.get(SESSION_HEADER) if headers is not None else None
        return client_request(next(self.ids), self.upstreams.now(), text, ids, max_new, self.cfg.block_size,
                              self.sessions, session, turn, remember)

    async def route(self, endpoint: str, path: str, payload: dict[str, Any], raw: bytes, req: Request,
                    stream: bool, plan_edit: PlanEdit,
                    forced: Action | None = None) -> Response:
        """Decide and forward one request; never raises for upstream trouble (503 instead)."""
        t0 = time.perf_counter()
        m = self.metrics
        if self.upstreams.inflight() >= self.cfg.max_inflight:  # shed load instead of queueing without bound
            m.requests.labels(endpoint, "503").inc()
            return unavailable(f"router overloaded: {self.cfg.max_inflight} requests already in flight; retry later")
        if not (self.upstreams.available("large") or self.upstreams.available("small")):
            m.requests.labels(endpoint, "503").inc()
            return unavailable("no pool has a usable worker (all unhealthy, breaker open or paused)")
        out = self.slot.decide(req, self.upstreams.state(), self.upstreams.matches(req))
        self.upstreams.monitor.arrived()  # after the decision, as the simulator counts a request at its submit
        if forced is not None:
            out.action, out.source = forced, "forced"
        if self.decisions is not None:
            self.decisions.append({"id": req.id, "time": req.arrival, "action": int(out.action), "source": out.source,
                                   "reason": out.reason, "obs": out.obs})
        m.decision_latency.observe(out.elapsed_s)
        m.decisions.labels(ACTION_NAMES[out.action], out.source).inc()
        if out.reason is not None:
            m.fallbacks.labels(out.reason).inc()
        headers = {"x-rlroute-action": ACTION_NAMES[out.action], "x-rlroute-source": out.source,
                   "x-rlroute-decision-id": str(req.id)}
        if out.reason:
            headers["x-rlroute-fallback-reason"] = out.reason
        try:
            extra = 0
            if out.action == Action.HYBRID:
                body = json.dumps(await self._plan(req, payload, plan_edit, headers)).encode()
                pool, extra = "small", int(headers["x-rlroute-plan-tokens"])
            else:  # the client's validated bytes go upstream unchanged (no re-serialisation)
                body = raw
                pool = "large" if out.action == Action.LARGE else "small"
            for attempt in range(self.cfg.retries + 1):
                op = await self.proxy.open_with_fallback(pool, path, body, req, extra)
                headers["x-rlroute-pool"] = op.pool
                headers["x-rlroute-worker"] = op.worker.url
                headers["x-rlroute-attempts"] = str(op.attempts + attempt)
                if stream:
                    resp = await self.proxy.respond(op, headers, stream)
                    break
                try:  # a whole answer: nothing reached the client yet, so a body cut short is retried too
                    resp = await self.proxy.respond(op, headers, stream)
                    break
                except Exception:  # noqa: BLE001 - the worker died while sending its body
                    op.worker.breaker.failure()
                    m.upstream.labels(op.pool, "read_error").inc()
            else:
                m.requests.labels(endpoint, "502").inc()
                return unavailable(f"pool {pool!r}: workers failed while answering ({self.cfg.retries + 1} attempts)",
                                   502)
        except NoUpstream as e:
            m.requests.labels(endpoint, "503").inc()
            return unavailable(str(e))
        m.requests.labels(endpoint, str(resp.status_code)).inc()
        m.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return resp

    async def _plan(self, req: Request, payload: dict[str, Any], plan_edit: PlanEdit,
                    headers: dict[str, str]) -> dict[str, Any]:
        """Stage 1 of hybrid: a short plan from the large pool, asked the way the client asked (the small pool
        answers without one if the large pool cannot plan — the answer matters more than the plan).

        A chat request's plan goes through the chat endpoint (one more user turn asking for a plan); a text
        prompt's through ``/generate`` with the same request appended; an ``input_ids`` request's through
        ``/generate`` with the same ids, and the plan comes back as the large model's ``output_ids`` — the
        pools share a tokenizer, so they are appended as ids, never as bytes of the plan's text.
        """
        if "messages" in payload:
            path = "/v1/chat/completions"
            body: dict[str, Any] = {"messages": [*payload["messages"], {"role": "user", "content": PLAN_ASK}],
                                    "max_tokens": self.cfg.plan_tokens, "stream": False}
        else:
            path = "/generate"
            body = {"sampling_params": {"max_new_tokens": self.cfg.plan_tokens}, "stream": False}
            if req.prompt is not None:
                body["text"] = req.prompt + "\n\n" + PLAN_ASK + "\nPlan:"
            else:
                body["input_ids"] = payload.get("input_ids")
        plan: str | list[int] = ""
        try:
            op = await self.proxy.open("large", path, json.dumps(body).encode(), req)
            status, content, _ = await self.proxy.read(op)
            if status == 200:
                answer = json.loads(content)
                if "messages" in payload:
                    plan = str(answer["choices"][0]["message"]["content"] or "")
                elif req.prompt is not None:
                    plan = str(answer["text"])
                else:
                    plan = [int(x) for x in answer.get("output_ids") or []]
        except Exception:  # noqa: BLE001 - no plan (pool down, worker died, odd answer): answer without one
            plan = ""
        headers["x-rlroute-plan-tokens"] = str(len(plan) if isinstance(plan, list) else count_tokens(plan))
        return plan_edit(payload, plan) if plan else payload


PLAN_ASK = "Write a short plan for answering the request above."
PlanEdit = Callable[[dict[str, Any], Any], dict[str, Any]]


def _edit_generate(payload: dict[str, Any], plan: str | list[int]) -> dict[str, Any]:
    out = dict(payload)
    if isinstance(plan, list):
        out["input_ids"] = list(out["input_ids"]) + plan  # the large model's own token ids (shared tokenizer)
    else:
        out["text"] = f"{out['text']}\n\nPlan:{plan}\n\nAnswer:"
    return out


def _edit_chat(payload: dict[str, Any], plan: str) -> dict[str, Any]:
    out = dict(payload)
    out["messages"] = [*payload["messages"], {"role": "assistant", "content": f"Plan:{plan}"},
                       {"role": "user", "content": "Follow the plan and answer."}]
    return out


def _edit_completion(payload: dict[str, Any], plan: str) -> dict[str, Any]:
    out = dict(payload)
    out["prompt"] = f"{payload['prompt']}\n\nPlan:{plan}\n\nAnswer:"
    return out


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
            await router.transport.aclose()

    app = FastAPI(title="rlroute router", version="0.1.0", lifespan=lifespan,
                  description="Routes LLM requests between a large and a small SGLang pool with a learned policy.")
    app.state.router = router

    @app.post("/generate", summary="SGLang native generation (text or input_ids; stream for SSE)")
    async def generate(body: schemas.GenerateRequest, request: FastAPIRequest) -> Response:
        req = router.build_request(body.text, body.input_ids, body.sampling_params.max_new_tokens, request.headers)
        return await router.route("generate", "/generate", body.model_dump(exclude_none=True), await request.body(),
                                  req, body.stream, _edit_generate, router.forced_action(request.headers))

    @app.post("/v1/chat/completions", summary="OpenAI chat completions (stream for SSE)")
    async def chat(body: schemas.ChatRequest, request: FastAPIRequest) -> Response:
        payload = body.model_dump(exclude_none=True)
        turn = sum(1 for m in payload["messages"] if m.get("role") == "assistant")
        req = router.build_request(chat_prompt(payload["messages"]), None, body.max_new(), request.headers, turn)
        return await router.route("chat", "/v1/chat/completions", payload, await request.body(), req, body.stream,
                                  _edit_chat, router.forced_action(request.headers))

    @app.post("/v1/completions", summary="OpenAI completions (stream for SSE)")
    async def completions(body: schemas.CompletionRequest, request: FastAPIRequest) -> Response:
        req = router.build_request(body.prompt, None, body.max_tokens, request.headers)
        return await router.route("completions", "/v1/completions", body.model_dump(exclude_none=True),
                                  await request.body(), req, body.stream, _edit_completion,
                                  router.forced_action(request.headers))

    @app.get("/health", summary="200 when some pool can serve, else 503")
    async def health() -> Response:
        ok = {p: router.upstreams.available(p) for p in router.upstreams.pools}
        return JSONResponse({"status": "ok" if any(ok.values()) else "unavailable", "pools": ok},
                            status_code=200 if any(ok.values()) else 503)

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

    from rlroute.serve.admin import add_admin_routes

    add_admin_routes(app, router)
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)  # type: ignore[arg-type]
    return app
