"""The router's admin API: policy reload and coordinated weight updates, behind a bearer token.

The token comes from the environment variable named by ``admin_token_env`` (never from a file in the
repository); without it the admin API answers 403. The service binds loopback by default, so the admin
API is not reachable from other hosts unless the operator chooses so.

Coordinated weight update of one pool (the seed's, SLIME-style), with SGLang's semantics
(``PauseGenerationReqInput`` in ``sglang/srt/managers/io_struct.py``): the router stops choosing the pool
(new requests go to the other pool; with ``allow_cross_pool: false`` they get a clear 503) →
``/pause_generation`` with an explicit ``mode`` on every worker — ``retract`` by default (running requests
go back to the worker's queue, their KV freed and recomputed after ``continue``: nothing is dropped and the
cache may be flushed), ``in_place`` (running requests keep their KV; SGLang's ``flush_cache`` fails while
any runs, so it is refused with ``flush_cache: true``), or ``abort`` (SGLang's own default: in-flight
requests end with ``finish_reason: abort``; only on request) → ``/update_weights_from_disk`` (its own flush
off, so the flush is a step of its own) → ``/flush_cache`` when the new weights make the cached KV wrong
(``flush_cache: true``, the default) → ``/continue_generation`` on **every** worker that was sent a pause,
also when a step failed (a worker is never left paused) → one warm-up request per worker → the pool takes
traffic again. The interruption (pool closed to new requests) is timed and returned per step; a failed step
answers 502 naming the step and the workers, after the continue.

Inspection (what the decision path saw, read from the running server — ``rlroute bench parity`` relies on
it): ``POST /admin/observe`` returns the observation and action the router would decide for a generation
body (with the request's headers, e.g. its session) without sending it — on the live state, or on a
given frozen pool state and prefix matches; ``GET /admin/decisions`` the last ``decision_log`` decisions
with their observations.

The endpoints are an ``APIRouter`` (:data:`admin_api`) that the app includes; each reads the process's
:class:`~rlroute.serve.router.Router` from ``app.state.router``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, Field, model_validator

from rlroute.cluster.base import state_from_json
from rlroute.serve.router import Router
from rlroute.worker import schemas


class ReloadRequest(BaseModel):
    """``POST /admin/policy/reload``: a new folder, or none to re-read the current one."""

    path: str | None = Field(None, max_length=4096)


class ObserveRequest(BaseModel):
    """``POST /admin/observe``: a ``/generate`` body, and optionally the pool state to decide on."""

    request: schemas.GenerateRequest
    state: dict[str, Any] | None = None  # rlroute.cluster.base.state_to_json; None = the live state
    matches: dict[str, list[int]] | None = None  # with ``state``: the prefix matches to use
    remember: bool = False  # count the request in its session (x-rlroute-session), as /generate does


class ArmRequest(BaseModel):
    """``POST /admin/arms``: a candidate policy folder and how it runs (:mod:`rlroute.serve.rollout`)."""

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(..., min_length=1, max_length=4096)
    mode: Literal["shadow", "canary", "ab"] = "shadow"
    share: float = Field(0.0, ge=0.0, le=1.0)
    sticky: Literal["session", "request"] = "session"


class WeightUpdateRequest(BaseModel):
    """``POST /admin/pools/{pool}/update_weights``."""

    model_path: str = Field(..., min_length=1, max_length=4096)
    flush_cache: bool = True
    warmup: bool = True
    weight_version: str | None = None
    pause_mode: Literal["retract", "in_place", "abort"] = "retract"

    @model_validator(mode="after")
    def _flushable(self) -> WeightUpdateRequest:
        if self.pause_mode == "in_place" and self.flush_cache:
            raise ValueError("pause_mode 'in_place' keeps running requests and their KV, and SGLang's flush_cache "
                             "fails while any runs: use pause_mode 'retract' (default) or flush_cache: false")
        return self


def _router(request: Request) -> Router:
    """The process's router, set by :func:`rlroute.serve.app.create_app`."""
    return request.app.state.router  # type: ignore[no-any-return]


RouterDep = Annotated[Router, Depends(_router)]


async def auth(router: RouterDep, authorization: str | None = Header(None)) -> None:
    """The admin bearer token check every ``/admin/*`` endpoint depends on."""
    token = router.cfg.admin_token
    if not token:
        raise HTTPException(403, f"admin API disabled: set ${router.cfg.admin_token_env} when starting the router")
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(authorization[len("Bearer "):].encode(), token.encode()):
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


admin_api = APIRouter(prefix="/admin", dependencies=[Depends(auth)])
"""``/admin/*``, behind the bearer token (module doc)."""


@admin_api.get("/status", summary="Policy and worker state")
async def status(router: RouterDep) -> dict[str, Any]:
    up = router.upstreams
    return {
        "policy": router.slot.describe(),
        "pools": {
            name: {"paused": up.pools[name].held, "available": up.available(name), "workers": [
                {"id": w.worker_id, "url": w.url, "usable": w.usable, "health_ok": w.health_ok, "breaker": w.breaker.state,
                 "breaker_half_opens": w.breaker.half_opens,
                 "inflight": w.inflight, "paused": w.stats.paused, "error": w.error,
                 "scraped_ago_s": time.monotonic() - w.scraped_at}
                for w in up.workers(name)]}
            for name in up.pools},
    }


@admin_api.post("/observe",
                summary="The observation and action the router would decide for a /generate body now (not sent)")
async def observe(body: ObserveRequest, request: Request, router: RouterDep) -> dict[str, Any]:
    g = body.request
    req = router.build_request(g.text, g.input_ids, g.sampling_params.max_new_tokens, request.headers,
                               remember=body.remember)
    if body.state is not None:
        try:
            state = state_from_json(body.state)
        except ValueError as e:
            raise HTTPException(422, str(e)) from e
        matches = body.matches or {}
    else:
        state, matches = router.upstreams.state(), router.upstreams.matches(req)
    out = router.slot.decide(req, state, matches)
    return {"observation": None if out.obs is None else [float(x) for x in out.obs], "action": int(out.action),
            "source": out.source, "reason": out.reason, "matches": matches, "time": state.time,
            "day_offset": state.day_offset,
            "input_len": req.input_len}


@admin_api.get("/decisions", summary="The last decision_log decisions")
async def decisions(router: RouterDep, after: int = -1) -> dict[str, Any]:
    if router.decisions is None:
        raise HTTPException(409, "decision log is off: start the router with decision_log=N (N > 0)")
    rows = [{**d, "obs": None if d["obs"] is None else [float(x) for x in d["obs"]]}
            for d in list(router.decisions) if d["id"] > after]
    return {"decisions": rows}


@admin_api.post("/policy/reload", summary="Load a policy folder, swap atomically")
async def reload(body: ReloadRequest, router: RouterDep) -> Any:
    attempt = await router.slot.reload(body.path)
    ok = attempt.policy is not None
    router.metrics.reloads.labels("ok" if ok else attempt.reason or "error").inc()
    if not ok:
        raise HTTPException(422, f"policy not loaded ({attempt.reason}: {attempt.detail}); "
                                 f"still serving {router.slot.current.path or 'the fallback heuristic'}")
    return {"reloaded": True, "policy": router.slot.describe()}


@admin_api.get("/arms", summary="Rollout arms: incumbent and candidates, their windows and rollbacks")
async def arms(router: RouterDep) -> dict[str, Any]:
    return {"incumbent_policy": router.slot.describe(), **router.rollout.describe()}


@admin_api.post("/arms", summary="Add a candidate (shadow, canary or ab); its folder is loaded and schema-checked")
async def add_arm(body: ArmRequest, router: RouterDep) -> dict[str, Any]:
    from rlroute.serve.rollout import CandidateSpec

    spec = CandidateSpec(body.name, body.path, body.mode, body.share, body.sticky)
    try:
        spec.check()
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
    if spec.name in router.rollout.arms:
        raise HTTPException(409, f"candidate {spec.name!r} exists already; remove it first")
    slot = await asyncio.to_thread(router.make_slot, spec.path)
    if slot.current.policy is None:
        raise HTTPException(422, f"candidate {spec.name!r} not added: its policy did not load "
                                 f"({slot.current.reason}: {slot.current.detail})")
    try:
        router.rollout.add(spec, slot)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
    return router.rollout.describe()["candidates"][spec.name]


def _arm(router: Router, name: str) -> Any:
    arm = router.rollout.arms.get(name)
    if arm is None:
        raise HTTPException(404, f"no candidate {name!r}; candidates are {sorted(router.rollout.arms)}")
    return arm


@admin_api.post("/arms/{name}/pause", summary="Stop a candidate deciding and acting (kept, resumable)")
async def pause_arm(name: str, router: RouterDep) -> dict[str, Any]:
    arm = _arm(router, name)
    arm.paused, arm.paused_reason = True, "paused by operator"
    return {"name": name, "paused": True}


@admin_api.post("/arms/{name}/resume", summary="Let a paused (or rolled back) candidate run again")
async def resume_arm(name: str, router: RouterDep) -> dict[str, Any]:
    arm = _arm(router, name)
    arm.paused, arm.paused_reason = False, None
    return {"name": name, "paused": False}


@admin_api.post("/arms/{name}/promote", summary="Make a candidate the incumbent (atomic swap; it leaves the arms)")
async def promote_arm(name: str, router: RouterDep) -> dict[str, Any]:
    arm = _arm(router, name)
    router.rollout.promote(name, router.slot)
    router.metrics.reloads.labels("promoted").inc()
    return {"promoted": name, "path": arm.spec.path, "policy": router.slot.describe()}


@admin_api.delete("/arms/{name}", summary="Remove a candidate")
async def remove_arm(name: str, router: RouterDep) -> dict[str, Any]:
    _arm(router, name)
    del router.rollout.arms[name]
    return {"removed": name}


@admin_api.post("/pools/{pool}/update_weights",
                summary="Coordinated weight update of one pool (pause, flush, update, continue, warm up)")
async def update_weights(pool: str, body: WeightUpdateRequest, router: RouterDep) -> dict[str, Any]:
    up = router.upstreams
    if pool not in up.pools:
        raise HTTPException(404, f"unknown pool {pool!r}; pools are {sorted(up.pools)}")
    if up.pools[pool].held:
        raise HTTPException(409, f"pool {pool!r} is already being updated")
    workers = [w for w in up.workers(pool) if w.health_ok]
    if not workers:
        raise HTTPException(503, f"pool {pool!r} has no healthy worker to update")
    client = router.client
    steps: dict[str, float] = {}
    failed: str | None = None
    held = 0  # requests the pause retracted or aborted, as the workers report them

    async def step(name: str, path: str, payload: dict[str, Any] | None = None) -> list[Any]:
        """``path`` on every worker at once; raises ``_StepFailed`` naming the workers that did not answer 2xx;
        returns the answers."""
        t = time.perf_counter()
        rs = await asyncio.gather(*(client.post(w.url + path, json=payload) for w in workers), return_exceptions=True)
        steps[name] = time.perf_counter() - t
        bad = [f"{w.url}: {f'{type(r).__name__}: {r}' if isinstance(r, BaseException) else f'HTTP {r.status_code}'}"
               for w, r in zip(workers, rs, strict=True) if isinstance(r, BaseException) or r.status_code >= 300]
        if bad:
            raise _StepFailed(f"{path} failed on {bad}")
        return rs

    t0 = time.perf_counter()
    up.pools[pool].held = True
    try:
        try:
            for r in await step("pause_s", "/pause_generation", {"mode": body.pause_mode}):
                with contextlib.suppress(ValueError, AttributeError):  # SGLang answers no count; the emulator does
                    held += int(r.json().get("requests") or 0)
            payload: dict[str, Any] = {"model_path": body.model_path, "flush_cache": False}
            if body.weight_version:
                payload["weight_version"] = body.weight_version
            await step("update_s", "/update_weights_from_disk", payload)
            up.monitor.weights_updated(pool)
            if body.flush_cache:
                await step("flush_s", "/flush_cache")
                up.monitor.forget_prefixes(pool)  # the router's prefix estimate is now wrong too
        except _StepFailed as e:
            failed = str(e)
        try:  # every worker that was sent a pause, whatever happened since: none is left paused
            await step("continue_s", "/continue_generation")
        except _StepFailed as e:
            failed = f"{failed}; {e}" if failed else str(e)
        if body.warmup and failed is None:
            try:
                await step("warmup_s", "/generate", {"text": "warm-up", "sampling_params": {
                    "max_new_tokens": router.cfg.warmup_max_new_tokens}})
            except _StepFailed as e:
                failed = str(e)
    finally:
        await up.refresh(health=False)  # read the workers' un-paused state before reopening the pool
        up.pools[pool].held = False
    interruption = time.perf_counter() - t0
    if failed is not None:
        raise HTTPException(502, f"weight update of pool {pool!r} failed: {failed} (continue_generation was sent "
                                 f"to every worker; steps done: {sorted(steps)})")
    router.metrics.weight_update.labels(pool).set(interruption)
    return {"pool": pool, "workers": [w.url for w in workers], "interruption_s": interruption,
            "steps": steps, "flushed": body.flush_cache, "pause_mode": body.pause_mode,
            "paused_requests": held, "model_path": body.model_path}


class _StepFailed(Exception):
    """A step of the weight update failed on some worker (the message names them)."""
