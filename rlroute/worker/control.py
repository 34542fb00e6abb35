"""The emulated worker's state (:class:`WorkerState`) and its control endpoints, as SGLang serves them: ``/flush_cache``, ``/pause_generation``
(with SGLang's three modes), ``/continue_generation``, ``/update_weights_from_disk``, and the fault knobs
(``/rlroute/faults``, :mod:`rlroute.worker.faults`).

Semantics (``sglang/srt/managers/io_struct.py`` ``PauseGenerationReqInput``, the scheduler's
``flush_cache``): a pause in any mode holds new requests until ``continue``; ``in_place`` keeps the running
batch and its KV; ``retract`` sends the running batch back to the queue (KV freed, recomputed after
``continue``); ``abort`` (the default when no mode is given) ends every request in flight with
``finish_reason: abort``. ``flush_cache`` answers 400 while the running batch is not empty (queued requests,
e.g. retracted ones, do not block it). ``update_weights_from_disk`` flushes after loading unless its
``flush_cache`` is false.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from rlroute.worker import schemas
from rlroute.worker.engine import Engine
from rlroute.worker.faults import Faults
from rlroute.worker.metrics import WorkerMetrics


class WorkerState:
    """Everything one worker process serves: engine, knobs, metrics and identity."""

    def __init__(self, engine: Engine, faults: Faults, *, model: str, pool: str, weight_load_s: float) -> None:
        self.engine = engine
        self.faults = faults
        self.model = model
        self.pool = pool
        self.weight_load_s = weight_load_s
        self.weight_version = "initial"
        self.metrics = WorkerMetrics(engine, model)
        # the last generation requests' x-request-id and Authorization, for tests of what a router forwards
        self.recent: deque[dict[str, str | None]] = deque(maxlen=64)


def error(status: int, message: str) -> JSONResponse:
    """OpenAI's error object (SGLang answers ``{"error": {"message", ...}}`` on its OpenAI routes)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                        status_code=status)


def add_control(app: FastAPI, state: WorkerState) -> None:
    """Register the control and fault endpoints on the worker ``app`` (module doc)."""

    def injected(path: str) -> JSONResponse | None:
        """The ``fail_path`` fault: this control endpoint answers 500 and does nothing."""
        return error(500, f"injected fault on {path}") if state.faults.fail_path == path else None

    @app.post("/flush_cache")
    async def flush_cache() -> Response:
        if (err := injected("/flush_cache")) is not None:
            return err
        # SGLang's scheduler flushes only with an empty running batch (Scheduler.flush_cache / _is_no_request);
        # queued requests (e.g. retracted by a pause) are fine: their KV is recomputed
        if state.engine.busy:
            return PlainTextResponse("Cache not flushed because there are pending requests. "
                                     f"#running-req: {len(state.engine.running)}", status_code=400)
        freed = state.engine.model.flush()
        return PlainTextResponse(f"Cache flushed. Freed {freed} tokens.")

    @app.post("/pause_generation")
    async def pause_generation(request: Request) -> Response:
        # SGLang's PauseGenerationReqInput: {"mode": "abort" | "retract" | "in_place"}, default "abort"
        if (err := injected("/pause_generation")) is not None:
            return err
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            mode = body.get("mode", "abort") if isinstance(body, dict) else body
            n = await state.engine.pause_mode(str(mode) if isinstance(mode, str) else repr(mode))
        except (ValueError, NotImplementedError) as e:
            return error(400, f"pause_generation: {e}")
        return JSONResponse({"success": True, "message": f"Generation paused (mode {mode}).", "requests": n})

    @app.post("/continue_generation")
    async def continue_generation() -> Response:
        if (err := injected("/continue_generation")) is not None:
            return err
        state.engine.resume()
        return JSONResponse({"success": True, "message": "Generation continued."})

    @app.post("/update_weights_from_disk")
    async def update_weights_from_disk(req: schemas.UpdateWeightsRequest) -> Response:
        if (err := injected("/update_weights_from_disk")) is not None:
            return err
        # Loading weights blocks the scheduler on a real server; the load time is modelled, then sped up.
        was_paused = state.engine.paused
        state.engine.pause()
        await asyncio.sleep(state.weight_load_s / state.engine.speedup)
        state.weight_version = req.weight_version or req.model_path
        if req.flush_cache and not state.engine.busy:  # SGLang flushes after loading unless asked not to
            state.engine.model.flush()
        if not was_paused:
            state.engine.resume()
        return JSONResponse({"success": True, "message": f"Succeeded to update model weights from {req.model_path}.",
                             "num_paused_requests": 0})

    @app.get("/rlroute/faults")
    async def get_faults() -> dict[str, Any]:
        return state.faults.as_dict()

    @app.post("/rlroute/faults")
    async def set_faults(request: Request) -> Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of knob -> value")
            state.faults.update(changes)
        except (ValueError, KeyError, TypeError) as e:
            return error(400, str(e))
        return JSONResponse(state.faults.as_dict())

