"""The emulated SGLang worker's HTTP API (FastAPI): SGLang's endpoints and JSON shapes.

``/generate`` takes ``text`` or ``input_ids``, ``sampling_params.max_new_tokens`` (0: prefill only, as SGLang's
``Req.is_prefill_only``: the prompt is computed and cached, nothing generated) and ``stream``; it
answers ``{"text", "meta_info"}`` or streams Server-Sent Events ``data: {...}`` whose ``text`` is the
cumulative output (as SGLang's native API streams), closed by ``data: [DONE]``. ``meta_info`` carries
``id``, ``prompt_tokens``, ``completion_tokens``, ``cached_tokens``, ``e2e_latency`` (modelled seconds:
what the instance model says the request took on the real server, not the sped-up wall time, which is
``wall_latency``) and ``finish_reason`` (``{"type": "length", "length": n}`` at the cap, ``{"type": "stop"}``
before it). The OpenAI endpoints return OpenAI shapes with ``usage.prompt_tokens_details.cached_tokens`` as
SGLang does.

Two request headers stand in for what a real model and its client know (emulation hooks; a real SGLang
ignores them):

* ``x-rlroute-output-tokens: n`` — the reply ends after ``n`` tokens (a real model's EOS), at most the
  request's ``max_new_tokens``, which stays the cap SGLang's admission reserves from. Without it the
  emulated model generates the whole cap.
* ``x-rlroute-output-blocks: block_size:h1,h2,...`` (``input_ids`` requests) — the chained ids the next
  turn's prompt carries for this answer (``Request.output_blocks``, expanded to token ids as the live
  cluster expands prompt blocks): when the request finishes, the answer enters the prefix cache under the
  ids the next turn's ``input_ids`` will hash to, as SGLang's ``cache_finished_req`` inserts the output
  tokens, so the next turn hits its own answer (:func:`rlroute.worker.tokens.answer_blocks`).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from rlroute.worker import schemas
from rlroute.worker.control import WorkerState, add_control
from rlroute.worker.control import error as _error
from rlroute.worker.engine import Engine, Job
from rlroute.worker.tokens import (
    OUTPUT_BLOCKS_HEADER,
    OUTPUT_TOKENS_HEADER,
    answer_blocks,
    chat_prompt,
    count_tokens,
    filler_ids,
    filler_text,
    id_blocks,
    parse_output_blocks,
    text_blocks,
)


def _output_tokens(value: str | None) -> int | None:
    """The ``x-rlroute-output-tokens`` header: None when absent; ``ValueError`` naming it when malformed."""
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{OUTPUT_TOKENS_HEADER}: expected a token count >= 1, got {value[:40]!r}")
    return n


def _finish(job: Job) -> str:
    """OpenAI's ``finish_reason`` of a finished job: ``length`` at the cap, ``stop`` before it (EOS), ``abort``
    when a ``pause_generation`` in ``abort`` mode ended it (as SGLang reports it)."""
    if job.abort_message:
        return "abort"
    return "length" if job.generated >= job.max_new_tokens else "stop"


def _meta(state: WorkerState, job: Job, t0: float) -> dict[str, Any]:
    start = job.arrival
    end = job.finish if job.finish is not None else state.engine.virtual_now()
    return {
        "id": job.rid,
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.generated,
        "cached_tokens": job.cached_tokens,
        "e2e_latency": end - start,
        # when the request reached this worker (its headers), on the machine's monotonic clock: a client on
        # the same machine places it on its own modelled clock (LiveCluster's completions)
        "arrival_monotonic": state.engine.clock_at(start),
        "ttft": (job.first_token - start) if job.first_token is not None else None,
        "wall_latency": time.monotonic() - t0,
        "weight_version": state.weight_version,
        "finish_reason": None if job.finish is None else (
            {"type": "abort", "message": job.abort_message} if job.abort_message else
            {"type": "length", "length": job.generated} if job.generated >= job.max_new_tokens else {"type": "stop"}),
    }


_GENERATION_PATHS = frozenset({"/generate", "/v1/chat/completions", "/v1/completions"})


class _HoldArrival:
    """ASGI middleware: a generation request's arrival is stamped when its headers arrive, before the body
    is read, parsed and tokenized (:meth:`Engine.hold`); the hold id goes to the handler in the request
    state and is released however the request ends."""

    def __init__(self, app: Any, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in _GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        hold = self.engine.hold()
        scope.setdefault("state", {})["rlroute_hold"] = hold
        try:
            await self.app(scope, receive, send)
        finally:
            self.engine.release(hold)


def hold_of(request: Request) -> int | None:
    """The arrival hold :class:`_HoldArrival` stamped for this request (None outside the middleware)."""
    return getattr(request.state, "rlroute_hold", None)


def create_app(state: WorkerState) -> FastAPI:
    """Build the worker app around ``state`` (the engine starts with the server's event loop)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.engine.start()
        try:
            yield
        finally:
            await state.engine.stop()

    app = FastAPI(title="rlroute emulated SGLang worker", lifespan=lifespan)
    app.state.worker = state
    app.add_middleware(_HoldArrival, engine=state.engine)

    async def admit(prompt: str | None, ids: list[int] | None, max_new: int, request: Request,
                    first: bool = True) -> Job | JSONResponse:
        """Submit one prompt (``first``: the request's first, which runs the fault knobs)."""
        if first:
            state.recent.append({"request_id": request.headers.get("x-request-id"),
                                 "authorization": request.headers.get("authorization")})
        hold = hold_of(request)
        if first and (state.faults.latency_ms or state.faults.hang):
            state.engine.release(hold)  # an injected delay must not hold back the engine: arrival after it
            hold = None
        status = await state.faults.apply() if first else None
        if status is not None:
            return _error(status, f"injected fault (status {status})")
        bs = state.engine.model.block_size
        if ids is not None:
            blocks, n = id_blocks(ids, bs), len(ids)
        else:
            text = prompt or ""
            blocks, n = text_blocks(text, bs), count_tokens(text)
        if n + max_new > state.engine.model.kv_capacity_tokens:
            return _error(400, f"prompt ({n} tokens) + max_new_tokens ({max_new}) exceeds the KV capacity "
                          f"({state.engine.model.kv_capacity_tokens} tokens)")
        answer: tuple[int, ...] = ()
        try:
            out_len = _output_tokens(request.headers.get(OUTPUT_TOKENS_HEADER))
            if ids is not None and (v := request.headers.get(OUTPUT_BLOCKS_HEADER)):
                out_bs, out_blocks = parse_output_blocks(v)
                answer = answer_blocks(ids, blocks, out_bs, out_blocks, bs)
        except ValueError as e:
            return _error(400, str(e))
        return state.engine.submit(blocks, n, max_new, hold=hold, output_tokens=out_len, output_blocks=answer)

    async def events(job: Job) -> AsyncIterator[int]:
        """Yield the token count each time the engine emits, coalescing tokens that arrived together."""
        while True:
            kind, n = await job.events.get()
            while not job.events.empty():
                kind, n = job.events.get_nowait()
            yield n
            if kind == "done":
                return

    def stream(job: Job, t0: float, chunk: Any, seed: int) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                async for n in events(job):
                    yield b"data: " + json.dumps(chunk(job, n, t0, seed)).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"
            finally:
                if job.finish is None:
                    state.engine.abort(job)  # client went away mid-stream
                state.metrics.observe(job)

        return StreamingResponse(body(), media_type="text/event-stream")

    def generate_chunk(job: Job, n: int, t0: float, seed: int) -> dict[str, Any]:
        return {"text": filler_text(n, seed), "meta_info": _meta(state, job, t0), "index": 0}

    async def run_to_end(job: Job) -> None:
        """Wait for a non-streamed job; abort it if the client went away, then count it."""
        try:
            async for _ in events(job):
                pass
        finally:
            if job.finish is None:
                state.engine.abort(job)
        state.metrics.observe(job)

    @app.post("/generate")
    async def generate(req: schemas.GenerateRequest, request: Request) -> Response:
        t0 = time.monotonic()
        max_new = req.sampling_params.max_new_tokens
        job = await admit(req.text, req.input_ids, max_new, request)
        if isinstance(job, JSONResponse):
            return job
        seed = zlib.crc32((req.text or "").encode("utf-8", "surrogatepass")[:64])
        if req.stream:
            return stream(job, t0, generate_chunk, seed)
        await run_to_end(job)
        return JSONResponse({"text": filler_text(job.generated, seed), "output_ids": filler_ids(job.generated, seed),
                             "meta_info": _meta(state, job, t0)})

    def usage(jobs: list[Job]) -> dict[str, Any]:
        prompt, out = sum(j.prompt_tokens for j in jobs), sum(j.generated for j in jobs)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": sum(j.cached_tokens for j in jobs)},
        }

    async def openai(prompts: list[tuple[str | None, list[int] | None]], max_new: int, do_stream: bool, chat: bool,
                     request: Request) -> Response:
        """OpenAI completions (one choice per prompt of a list prompt) or a chat completion."""
        jobs: list[tuple[Job, int]] = []
        for i, (text, ids) in enumerate(prompts):
            job = await admit(text, ids, max_new, request, first=i == 0)
            if isinstance(job, JSONResponse):
                for j, _ in jobs:
                    state.engine.abort(j)
                return job
            key = (text or "").encode("utf-8", "surrogatepass")[:64] if ids is None else bytes(str(ids[:16]), "ascii")
            jobs.append((job, zlib.crc32(key)))
        obj = "chat.completion" if chat else "text_completion"
        base = {"id": f"cmpl-{jobs[0][0].rid}", "created": int(time.time()), "model": state.model}
        if do_stream:
            async def body() -> AsyncIterator[bytes]:
                for index, (job, seed) in enumerate(jobs):  # choice after choice, each with its index
                    sent = 0
                    try:
                        async for n in events(job):
                            delta = filler_text(n, seed)[len(filler_text(sent, seed)):]
                            sent = n
                            done = job.finish is not None
                            choice: dict[str, Any] = {"index": index, "finish_reason": _finish(job) if done else None}
                            if chat:
                                choice["delta"] = {"role": "assistant", "content": delta}
                            else:
                                choice["text"] = delta
                            out = {**base, "object": obj + ".chunk", "choices": [choice]}
                            if done and index == len(jobs) - 1:
                                out["usage"] = usage([j for j, _ in jobs])
                            yield b"data: " + json.dumps(out).encode() + b"\n\n"
                    finally:
                        if job.finish is None:
                            for j, _ in jobs[index:]:
                                state.engine.abort(j)  # client went away mid-stream
                        state.metrics.observe(job)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(body(), media_type="text/event-stream")
        await asyncio.gather(*(run_to_end(job) for job, _ in jobs))
        choices = []
        for index, (job, seed) in enumerate(jobs):
            text = filler_text(job.generated, seed)
            choice = {"index": index, "finish_reason": _finish(job)}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            choices.append(choice)
        return JSONResponse({**base, "object": obj, "choices": choices, "usage": usage([j for j, _ in jobs])})

    @app.post("/v1/chat/completions")
    async def chat_completions(req: schemas.ChatRequest, request: Request) -> Response:
        return await openai([(chat_prompt([m.model_dump() for m in req.messages]), None)], req.max_new(), req.stream,
                            True, request)

    @app.post("/v1/completions")
    async def completions(req: schemas.CompletionRequest, request: Request) -> Response:
        return await openai(req.prompts(), req.max_tokens, req.stream, False, request)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=state.faults.health_status)

    @app.get("/health_generate")
    async def health_generate() -> Response:
        return Response(status_code=state.faults.health_status)

    @app.get("/get_load")
    async def get_load() -> dict[str, Any]:
        e = state.engine
        return {
            "dp_rank": 0,
            "num_reqs": len(e.running) + len(e.waiting),
            "num_running_reqs": len(e.running),
            "num_waiting_reqs": len(e.waiting),
            "num_tokens": e.kv_used_tokens,
            "load": len(e.running) + len(e.waiting),
        }

    @app.get("/get_model_info")
    async def get_model_info() -> dict[str, Any]:
        return {"model_path": state.model, "tokenizer_path": None, "is_generation": True}

    @app.get("/get_server_info")
    async def get_server_info() -> dict[str, Any]:
        m = state.engine.model
        return {
            "model_path": state.model,
            "served_model_name": state.model,
            "version": "rlroute-emulated",
            "max_total_num_tokens": m.kv_capacity_tokens,
            "max_running_requests": m.max_running_requests,
            "chunked_prefill_size": m.chunked_prefill_tokens,
            "page_size": m.block_size,
            "internal_states": [{"last_gen_throughput": state.engine.stats.recent_gen_throughput}],
            "rlroute": {
                "pool": state.pool,
                "profile": m.profile_name,
                "speedup": state.engine.speedup,
                "paused": state.engine.paused,
                "weight_version": state.weight_version,
                "faults": state.faults.as_dict(),
                "recent_requests": list(state.recent),
            },
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    add_control(app, state)
    return app
