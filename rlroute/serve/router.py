"""The router's decision-and-forward core: :class:`Router` holds one router process's state (upstreams,
guarded policy, proxy, sessions, metrics) and routes one request at a time; hybrid runs plan-and-execute —
a plan of at most ``plan_tokens`` from the large pool, then the small pool answers with the plan placed after
the prompt (after, not before, so the prompt's prefix blocks stay cacheable on the small pool). With
``hybrid.mode: pipelined`` the client's prompt is sent at once, as a prefill-only request (its cap set to 0:
SGLang's ``max_new_tokens: 0``, ``Req.is_prefill_only``), to the small worker the in-pool policy picks, while
the large pool plans; the answer then goes to that worker first and finds the prompt in its radix cache. The
plan is never streamed to the client: its first token is the answer's (TTFT includes the plan). The HTTP
front is :mod:`rlroute.serve.app`, the admin API :mod:`rlroute.serve.admin`.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiohttp import web
from pydantic import BaseModel

from rlroute.policies.registry import make_policy
from rlroute.serve.config import ServeConfig
from rlroute.serve.decision import Outcome, PolicySlot
from rlroute.serve.decisionlog import DecisionLog, Stage, decision_record, outcome_record
from rlroute.serve.errors import web_error
from rlroute.serve.intake import SessionTable, client_request
from rlroute.serve.metrics import RouterMetrics
from rlroute.serve.proxy import Answer, NoUpstream, Proxy
from rlroute.serve.rollout import INCUMBENT, Rollout
from rlroute.serve.upstream import Upstreams
from rlroute.types import ACTION_NAMES, Action, Request
from rlroute.worker.tokens import EMULATION_HEADERS, OUTPUT_BLOCKS_HEADER, count_tokens
from rlroute.workload.client import SESSION_HEADER

log = logging.getLogger(__name__)
REQUEST_ID = "x-request-id"
REQUEST_ID_HEADERS = (REQUEST_ID, "x-correlation-id", "x-trace-id", "request-id")  # sglang-router's defaults


def request_id(headers: Any) -> str:
    """The client's request id (the first of sglang-router's ``request_id_headers`` it sent), else a new one."""
    if headers is not None:
        for h in REQUEST_ID_HEADERS:
            v = headers.get(h)
            if v:
                return str(v)[:128]
    return f"{_RID_PREFIX}{next(_RID_SEQ):016x}"


# A generated request id: this process's random 64-bit prefix and a counter (32 hex digits, unique per
# process; uuid4 per request cost ~3 us of os.urandom and UUID object building).
_RID_PREFIX = uuid.uuid4().hex[:16]
_RID_SEQ = itertools.count()


def upstream_auth(cfg: ServeConfig) -> dict[str, str]:
    """``Authorization`` for every call to a worker when an upstream API key is configured (SGLang ``--api-key``)."""
    return {"authorization": f"Bearer {cfg.upstream_api_key}"} if cfg.upstream_api_key else {}


@dataclass(slots=True)
class Relay:
    """A streamed answer still to send (by the HTTP front): status 200, these headers, then ``chunks``."""

    headers: dict[str, str]
    chunks: AsyncGenerator[bytes, None]


class Router:
    """Everything one router process holds (built by :func:`rlroute.serve.app.create_app`)."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        # compile (or load from numba's on-disk cache) the decision's kernels now, not on the first request
        import rlroute.export.ood_kernels  # noqa: F401
        import rlroute.features.kernels  # noqa: F401
        import rlroute.features.state_kernel  # noqa: F401
        limits = httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections)
        # the control client (admin calls to workers); the watches' health checks and scrapes have their own
        # aiohttp session (rlroute.serve.upstream says why), data-plane attempts the proxy's
        timeout = httpx.Timeout(max(cfg.health_timeout_s, 30.0), connect=cfg.connect_timeout_s)
        self.client = httpx.AsyncClient(limits=limits, timeout=timeout, headers=upstream_auth(cfg))
        self.metrics = RouterMetrics()
        self.upstreams = Upstreams(cfg, upstream_auth(cfg))
        self.slot = self.make_slot(cfg.policy_path)
        self.proxy = Proxy(self.upstreams, cfg.max_connections, self.metrics, cfg.retry, cfg.connect_timeout_s,
                           cfg.first_byte_timeout_s, cfg.token_timeout_s, cfg.allow_cross_pool, cfg.upstream_api_key)
        self.ids = itertools.count()
        self.sessions = SessionTable()
        # Decisions kept for /admin/decisions (the parity bench reads the vectors the router decided on).
        self.decisions: deque[dict[str, Any]] | None = deque(maxlen=cfg.decision_log) if cfg.decision_log else None
        # The decision log file (rlroute.serve.decisionlog): started and closed with the serving loop.
        self.log = DecisionLog(cfg.decision_file) if cfg.decision_file.path else None
        fb = cfg.fallback
        self.fallback_id = "fallback:" + (fb if isinstance(fb, str) else str(fb.get("_target_")))
        self.rollout = Rollout(cfg.rollout, self.make_slot)
        self.warming: set[asyncio.Task[None]] = set()  # pipelined warm-ups in flight (kept referenced)

    def make_slot(self, path: str | None) -> PolicySlot:
        """A policy slot for ``path`` with the router's inference timeout, fallback and OOD settings (loads it)."""
        cfg = self.cfg
        return PolicySlot(path, cfg.inference_timeout_ms, make_policy(cfg.fallback), cfg.ood)

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

    async def route(self, endpoint: str, path: str, payload: dict[str, Any] | BaseModel, raw: bytes, req: Request,
                    stream: bool, plan_edit: PlanEdit,
                    forced: Action | None = None, client_headers: Any = None) -> web.Response | Relay:
        """Decide and forward one request; never raises for upstream trouble (an OpenAI-shaped error instead).

        The emulated worker's hooks among ``client_headers`` (``x-rlroute-output-tokens`` and, unless a plan
        is prepended, ``x-rlroute-output-blocks``: :mod:`rlroute.worker.app`) go on to the worker that
        answers, so a load generator can send a client's cap and still end each reply at its trace length;
        so does the request id (:func:`request_id`), which the answer carries back. ``payload`` is the
        validated body, a pydantic model dumped only when a hybrid rewrites it (``raw`` goes upstream otherwise).
        """
        t0 = time.perf_counter()
        m = self.metrics
        rid = request_id(client_headers)
        up = self.upstreams
        if up.inflight() >= self.cfg.max_inflight:  # shed load instead of queueing without bound (sglang-router: 429)
            m.requests.labels(endpoint, "429").inc()
            self.log_refused(endpoint, 429, "router overloaded", rid, req)
            return web_error(429, f"router overloaded: {self.cfg.max_inflight} requests already in flight; "
                                  "retry later", retry_after_s=self.cfg.retry_after_s, headers={REQUEST_ID: rid})
        if not (up.available("large") or up.available("small")):
            m.requests.labels(endpoint, "503").inc()
            self.log_refused(endpoint, 503, "no pool has a usable worker", rid, req)
            return web_error(503, "no pool has a usable worker (all unhealthy, circuit breaker open or paused)",
                                  retry_after_s=self.cfg.retry_after_s, headers={REQUEST_ID: rid})
        state, matches = up.state(), up.matches(req)
        out = self.slot.decide(req, state, matches)
        arm, propensity, arms = INCUMBENT, 1.0, None
        if self.rollout.active:  # candidates decide too; the acting arm's action (or an exploration draw) is executed
            session = client_headers.get(SESSION_HEADER) if client_headers is not None else None
            d = self.rollout.decide(req, rid, session, out, state, matches)
            out, arm, propensity, arms = d.outcome, d.arm, d.propensity, d.arms
            for name, each in arms.items():
                m.arm_decisions.labels(name, each["action_name"], each["source"]).inc()
                if each["reason"] is not None:
                    m.arm_fallbacks.labels(name, each["reason"]).inc()
        up.monitor.arrived()  # after the decision, as the simulator counts a request at its submit
        if forced is not None:
            out.action, out.source, propensity = forced, "forced", 1.0
        if self.decisions is not None:
            self.decisions.append({"id": req.id, "time": req.arrival, "action": int(out.action), "source": out.source,
                                   "reason": out.reason, "obs": out.obs})
        rec = self._record(req, rid, endpoint, out, arm, propensity, arms) \
            if self.log is not None or self.rollout.active else None
        soon = asyncio.get_running_loop().call_soon
        soon(self._count_decision, out)  # runs while the request is upstream, not before it is sent
        headers = {"x-rlroute-action": ACTION_NAMES[out.action], "x-rlroute-source": out.source,
                   "x-rlroute-decision-id": str(req.id), REQUEST_ID: rid}
        if out.reason:
            headers["x-rlroute-fallback-reason"] = out.reason
        if arms is not None:
            headers["x-rlroute-arm"] = arm
        forward = {k: client_headers[k] for k in EMULATION_HEADERS if client_headers and k in client_headers}
        forward[REQUEST_ID] = rid
        extra = 0
        stages: list[Stage] = []
        warmed: list[int] = []  # the small worker a pipelined hybrid's warm-up went to
        if out.action == Action.HYBRID:
            if isinstance(payload, BaseModel):  # dumped only here: the other actions forward ``raw`` as it came
                payload = payload.model_dump(exclude_none=True)
            forward.pop(OUTPUT_BLOCKS_HEADER, None)  # the answer's prompt carries the plan
            if self.cfg.hybrid_mode == "pipelined":
                task = asyncio.create_task(self._warm(path, payload, req, forward[REQUEST_ID], warmed))
                self.warming.add(task)
                task.add_done_callback(self.warming.discard)
            body = json.dumps(await self._plan(req, payload, plan_edit, headers, forward, stages)).encode()
            pool, extra = "small", int(headers["x-rlroute-plan-tokens"])
        else:  # the client's validated bytes go upstream unchanged (no re-serialisation)
            body = raw
            pool = "large" if out.action == Action.LARGE else "small"
        try:
            a = await self.proxy.call(pool, path, body, req, stream, extra, forward,
                                      prefer=warmed[-1] if warmed else None, defer=True)
        except NoUpstream as e:
            m.requests.labels(endpoint, str(e.status)).inc()
            self._log_outcome(rec, e.status, stages, t0, str(e))
            return web_error(e.status, str(e), retry_after_s=self.cfg.retry_after_s, headers=headers)
        headers["x-rlroute-pool"] = a.pool
        headers["x-rlroute-worker"] = a.worker.worker_id  # not its address (internal)
        headers["x-rlroute-attempts"] = str(a.attempts)
        resp_headers = a.headers()
        resp_headers.update(headers)
        resp: web.Response | Relay
        if a.content is None:
            resp_headers.setdefault("content-type", "text/event-stream")
            resp, status = Relay(resp_headers, self.proxy.relay(a)), 200
            if rec is not None:  # logged once the stream has been relayed
                a.on_finish = lambda ans: self._log_outcome(rec, 200, [*stages, *_stage(ans)], t0)
        else:
            resp = web.Response(body=a.content, status=a.status, headers=resp_headers)
            status = a.status
            self._log_outcome(rec, status, [*stages, *_stage(a)], t0)
        soon(self._count_answer, endpoint, status, time.perf_counter() - t0)  # after the response is sent
        return resp

    def _count_decision(self, out: Outcome) -> None:
        """A decision's metrics (scheduled by :meth:`route` with ``call_soon``: off the request's latency path)."""
        m = self.metrics
        m.decision_latency.observe(out.elapsed_s)
        m.decisions.labels(ACTION_NAMES[out.action], out.source).inc()
        if out.reason is not None:
            m.fallbacks.labels(out.reason).inc()
        elif out.unenforced is not None:
            m.ood_unenforced.inc()

    def _count_answer(self, endpoint: str, status: int, latency_s: float) -> None:
        """A front answer's metrics (scheduled by :meth:`route`; ``latency_s`` measured to the response head)."""
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(latency_s)

    def _record(self, req: Request, rid: str, endpoint: str, out: Outcome, arm: str = INCUMBENT,
                propensity: float = 1.0, arms: dict[str, Any] | None = None) -> dict[str, Any]:
        """The decision log record of a decision (its outcome still to come)."""
        gen = (self.slot if arm == INCUMBENT else self.rollout.arms[arm].slot).current
        policy = {"policy": gen.path, "forced": "forced", "explore": "explore"}.get(out.source, self.fallback_id)
        obs = out.obs.copy() if out.obs is not None else None
        rec = decision_record(req, rid, int(out.action), out.source, out.reason, obs, policy,
                              gen.extractor.schema.hash, self.cfg.decision_file, endpoint, arm, arms)
        rec["propensity"] = propensity
        return rec

    def _log_outcome(self, rec: dict[str, Any] | None, status: int, stages: list[Stage], t0: float,
                     error: str | None = None) -> None:
        """Complete ``rec`` with its outcome: the acting arm's metrics and rollback rule, then the log's writer
        queue (a failure here is counted, never raised into the request)."""
        if rec is None:
            return
        try:
            o = rec["outcome"] = outcome_record(status, stages, self.cfg.slo,
                                                (time.perf_counter() - t0) * self.cfg.speedup, error)
            if self.rollout.active:
                self._observe_arm(rec["arm"], rec["source"], o)
            if self.log is not None:
                self.log.submit(rec)
        except Exception:  # noqa: BLE001 - the log must not fail a request
            if self.log is not None:
                self.log.errors += 1

    def _observe_arm(self, arm: str, source: str, o: dict[str, Any]) -> None:
        """Per-arm latency and cost metrics of an answered request, and the rollback rule."""
        m = self.metrics
        if o["ttft_s"] is not None:
            m.arm_ttft.labels(arm).observe(o["ttft_s"])
            m.arm_e2e.labels(arm).observe(o["e2e_s"])
            m.arm_cost.labels(arm).inc(o["cost"])
        event = self.rollout.observe(arm, source, o["ttft_s"])
        if event is not None:
            m.rollbacks.labels(arm, event["rule"]).inc()
            log.warning("rollout: candidate %s rolled back (%s): %s", arm, event["rule"], event)

    def log_refused(self, endpoint: str, status: int, error: str, rid: str, req: Request | None = None) -> None:
        """Log a request refused before any decision (malformed body, body too large, overload, no pool)."""
        if self.log is None:
            return
        try:
            if req is None:
                req = Request(id=-1, arrival=self.upstreams.now(), input_len=0, output_len=0)
            rec = decision_record(req, rid, None, "refused", None, None, None, None, self.cfg.decision_file, endpoint)
            rec["outcome"] = outcome_record(status, [], self.cfg.slo, 0.0, error)
            self.log.submit(rec)
        except Exception:  # noqa: BLE001 - the log must not fail a request
            self.log.errors += 1

    async def _warm(self, path: str, payload: dict[str, Any], req: Request, rid: str, warmed: list[int]) -> None:
        """The pipelined hybrid's warm-up: the client's prompt, prefill only, to a small worker (whose index lands
        in ``warmed`` as soon as it is picked). Its answer is dropped; a failed warm-up only costs the hit."""
        body = warm_body(path, payload)
        try:
            await self.proxy.call("small", path, json.dumps(body).encode(), req, False, headers={REQUEST_ID: rid},
                                  cross_pool=False, picked=warmed)
            self.metrics.warmups.labels("ok").inc()
        except Exception:  # noqa: BLE001 - no warm worker (pool down, refused): the answer prefills the prompt itself
            self.metrics.warmups.labels("failed").inc()

    async def _plan(self, req: Request, payload: dict[str, Any], plan_edit: PlanEdit,
                    headers: dict[str, str], forward: dict[str, str], stages: list[Stage]) -> dict[str, Any]:
        """Stage 1 of hybrid: a short plan from the large pool, asked the way the client asked (the small pool
        answers without one if the large pool cannot plan — the answer matters more than the plan); the plan
        stage's outcome goes to ``stages`` (the decision log).

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
            a = await self.proxy.call("large", path, json.dumps(body).encode(), req, False,
                                      headers={REQUEST_ID: forward[REQUEST_ID]}, cross_pool=False)
            stages.extend(_stage(a))
            if a.status == 200 and a.content is not None:
                answer = json.loads(a.content)
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


def _stage(a: Answer) -> list[Stage]:
    """The answer's stage for the decision log ([] when the answer said nothing usable about it)."""
    r = a.result
    if r is None:
        return []
    return [Stage(a.pool, a.worker.worker_id, r.ttft, r.e2e, r.tpot, r.queue_time, r.prompt_tokens,
                  r.cached_tokens, r.output_tokens, a.cost)]


PLAN_ASK = "Write a short plan for answering the request above."
# The prompt fields of each front endpoint, and where its cap goes (0: prefill only).
_PROMPT_KEYS = ("text", "input_ids", "messages", "prompt", "model")
_CAP = {"/generate": "sampling_params", "/v1/chat/completions": "max_tokens", "/v1/completions": "max_tokens"}


def warm_body(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The prefill-only twin of a client's request: same prompt, same endpoint, cap 0, not streamed. The answer's
    prompt starts with it (:func:`edit_generate`, :func:`edit_chat`, :func:`edit_completion` append the plan)."""
    body: dict[str, Any] = {k: payload[k] for k in _PROMPT_KEYS if k in payload}
    if _CAP[path] == "sampling_params":
        body["sampling_params"] = {"max_new_tokens": 0}
    else:
        body["max_tokens"] = 0
    body["stream"] = False
    return body
PlanEdit = Callable[[dict[str, Any], Any], dict[str, Any]]


def edit_generate(payload: dict[str, Any], plan: str | list[int]) -> dict[str, Any]:
    out = dict(payload)
    if isinstance(plan, list):
        out["input_ids"] = list(out["input_ids"]) + plan  # the large model's own token ids (shared tokenizer)
    else:
        out["text"] = f"{out['text']}\n\nPlan:{plan}\n\nAnswer:"
    return out


def edit_chat(payload: dict[str, Any], plan: str) -> dict[str, Any]:
    out = dict(payload)
    out["messages"] = [*payload["messages"], {"role": "assistant", "content": f"Plan:{plan}"},
                       {"role": "user", "content": "Follow the plan and answer."}]
    return out


def edit_completion(payload: dict[str, Any], plan: str) -> dict[str, Any]:
    out = dict(payload)
    out["prompt"] = f"{payload['prompt']}\n\nPlan:{plan}\n\nAnswer:"
    return out
