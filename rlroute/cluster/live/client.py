"""HTTP side of the live cluster: an asyncio loop on a background thread, a pooled httpx client, payloads.

The :class:`~rlroute.cluster.base.Cluster` protocol is synchronous (the env calls ``submit`` and
``advance``), while requests to workers must run concurrently and finish on their own schedule. One
daemon thread runs an event loop; ``submit`` schedules a coroutine there and returns at once; completions
are handed back through a lock-protected list. Scrapes run on the same loop (all workers in parallel).

Prompts go to the worker as ``input_ids`` so its prefix cache sees exactly the request's prefix structure:
ids synthesised from the chained block hashes (block ``h`` becomes ``block_size`` ids derived from ``h``:
equal block prefixes give equal id prefixes and therefore equal worker blocks), else the request's real
token ids, else the prompt text. A body is JSON bytes built from two parts: the prompt field (up to 70k ids,
milliseconds to build and encode) and the stage's sampling parameters. :meth:`LiveCluster.prepare
<rlroute.cluster.live.cluster.LiveCluster.prepare>` encodes the prompt field ahead of the send time, so an
open-loop sender does not spend it between the scheduled time and the POST: at an emulated ``speedup`` that
cost is ``speedup`` times longer in modelled time and reorders requests that arrive together
(``experiments/vs_sglang_router``, sim-vs-live gap).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import orjson

from rlroute.types import Request
from rlroute.worker.tokens import (
    MASK31,
    MULT,
    OUTPUT_BLOCKS_HEADER,
    OUTPUT_TOKENS_HEADER,
    block_ids,
    output_blocks_header,
)

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop on a daemon thread, with one shared ``httpx.AsyncClient``.

    Args:
        max_connections: connection pool size (keep-alive) across all workers.
        timeout_s: per-request timeout (connect, read, write, pool).
    """

    def __init__(self, max_connections: int = 256, timeout_s: float = 60.0) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rlroute-live-loop", daemon=True)
        self._thread.start()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)

        async def make() -> httpx.AsyncClient:
            return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s))

        self.client: httpx.AsyncClient = self.call(make())

    def spawn(self, coro: Coroutine[Any, Any, T]) -> Any:
        """Schedule ``coro`` on the loop; returns a ``concurrent.futures.Future``."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Close the client, stop the loop and join the thread (idempotent)."""
        if not self.loop.is_running():
            return

        async def shutdown() -> None:
            await self.client.aclose()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.call(shutdown(), timeout=10.0)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10.0)
            self.loop.close()


def block_token_ids(request: Request, extra_tokens: int = 0) -> list[int]:
    """Token ids standing for the request's prompt (+ ``extra_tokens`` request-unique ids, e.g. a plan).

    Block ``h`` maps to ``block_size`` ids ``(h*MULT + j) mod 2^31``; prompt tokens beyond the last block
    (a partial block) and the extra tokens are unique to the request, so they never create false cache
    hits. Without blocks, real ``token_ids`` are used as they are. Blocks win because trace workloads
    joined with a prompt set carry the trace's context blocks (``input_len`` tokens) and only the newest
    message's token ids.
    """
    if not request.blocks and request.token_ids is not None:
        ids = list(request.token_ids)
    else:
        bs = request.block_size
        n = request.input_len
        ids = block_ids(request.blocks[: -(-n // bs)], bs)[:n].tolist()
        if len(ids) < n:
            ids += _unique_ids(request.id, len(ids), n - len(ids))
    if extra_tokens:
        ids += _unique_ids(request.id, 1 << 20, extra_tokens)
    return ids


def _unique_ids(rid: int, start: int, n: int) -> list[int]:
    base = (int(rid) * 0x85EBCA6B) & MASK31
    return [((base + start + k) * MULT) & MASK31 for k in range(n)]


def stage_headers(request: Request, stage: Any, with_ids: bool) -> dict[str, str]:
    """The emulated worker's headers for one stage (:mod:`rlroute.worker.app`): where the reply ends, and, for
    a prompt sent as ``input_ids`` without extra tokens, the answer's blocks as the next turn carries them
    (``Request.output_blocks``). A real SGLang server ignores both. Always the JSON content type (bodies are
    sent as bytes)."""
    h = {"content-type": "application/json", OUTPUT_TOKENS_HEADER: str(int(stage.output_tokens))}
    if with_ids and not stage.extra_tokens and request.output_blocks and request.blocks:
        h[OUTPUT_BLOCKS_HEADER] = output_blocks_header(request.output_blocks, request.block_size)
    return h


IDS_FIELD = b'"input_ids":'


def prompt_field(request: Request, extra_tokens: int = 0) -> bytes:
    """The prompt member of a ``/generate`` body, JSON-encoded: ``"input_ids":[...]`` (:func:`block_token_ids`),
    or ``"text":"..."`` only when the request has neither blocks nor token ids."""
    if request.token_ids is None and not request.blocks and request.prompt is not None:
        return b'"text":' + orjson.dumps(request.prompt + (" plan" * extra_tokens))
    return IDS_FIELD + orjson.dumps(block_token_ids(request, extra_tokens))


def generate_body(max_new_tokens: int, prompt: bytes) -> bytes:
    """SGLang ``/generate`` body for one stage (greedy, non-streaming) around a :func:`prompt_field`."""
    return (b'{"sampling_params":{"max_new_tokens":%d,"temperature":0.0},"stream":false,%s}'
            % (int(max_new_tokens), prompt))
