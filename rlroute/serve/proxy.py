"""Sending one front request upstream: ONE retry loop over workers and pools, then the answer, whole or streamed.

:meth:`Proxy.call` is the only place a request is retried (:mod:`rlroute.serve.reliability` gives the
rules and their sglang-router sources). Each attempt takes the in-pool policy's pick among the usable
workers not tried yet — in the decided pool, then, when ``allow_cross_pool`` is on and that pool has none
left, in the other — and acquires the worker's circuit breaker (in half-open, the single probe). An
attempt fails, and the next one starts after a jittered exponential backoff while the attempt budget
lasts, on a connection error, on no response head within the attempt's time-to-first-byte limit, on a
408 / 429 / 5xx head, or, for a whole answer, on a body cut short — always before any byte has reached
the client. A stream that breaks after its first byte cannot be retried: it ends with an SSE error event.
Other 4xx answers are the request's own fault and are passed through.

The time-to-first-byte limit is ``first_byte_timeout_s`` for a streamed request; a whole answer's head
arrives with its last token, so its limit adds ``token_timeout_s`` per token of the request's cap. The
same limit bounds every later read of the attempt (the gap between stream chunks).

Every answer is accounted in the live state keeper (:meth:`rlroute.cluster.live.monitor.Monitor.complete`:
latency averages, cost, SLO outcome), whole or streamed, from what the answer says
(:func:`rlroute.cluster.live.monitor.answer_result`); the :class:`Answer` keeps that result and cost for the
router's decision log (a stream's once it has been relayed: ``Answer.on_finish``).

A whole answer is accounted in the monitor before :meth:`Proxy.call` returns, never later: the next decision
reads that state, and a deferred update would make what it sees depend on the event loop's order of callbacks,
which the simulator does not have. Only the attempt's metrics, which no decision reads, may wait: with ``defer``
(the router's client answers) they are scheduled with ``loop.call_soon`` and run once the current task step has
ended, after the front has handed the response to the transport.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import aiohttp
import orjson
from yarl import URL

from rlroute.cluster.live.monitor import answer_result
from rlroute.cluster.live.pool import StageResult
from rlroute.serve.metrics import RouterMetrics
from rlroute.serve.reliability import RetryPolicy
from rlroute.serve.upstream import RouterWorker, Upstreams
from rlroute.types import Request

_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "date", "server"}


class NoUpstream(Exception):
    """No attempt got an answer: ``outcomes`` counts what happened (no worker URLs: they are internal);
    ``status`` is the status the client gets (429 when every failure was a 429, else 503)."""

    def __init__(self, pools: list[str], outcomes: Counter[str], attempts: int) -> None:
        where = "+".join(repr(p) for p in pools)
        if attempts:
            seen = ", ".join(f"{k} x{v}" for k, v in outcomes.most_common())
            msg = f"pool {where}: no worker could serve the request after {attempts} attempt(s) ({seen})"
        else:
            msg = f"pool {where}: no usable worker (unhealthy, circuit breaker open or paused)"
        super().__init__(msg)
        self.pools = pools
        self.outcomes = outcomes
        self.attempts = attempts
        self.status = 429 if attempts and set(outcomes) == {"HTTP 429"} else 503


@dataclass(slots=True)
class Answer:
    """What an upstream answered: the head, and the whole body (``content``) unless it is streamed on."""

    response: aiohttp.ClientResponse
    worker: RouterWorker
    pool: str
    attempts: int
    t_sent: float  # perf_counter when the answering attempt went upstream
    content: bytes | None  # None: a 200 stream still to relay (:meth:`Proxy.relay`)
    result: StageResult | None = None  # what the answer said about its stage, once it is complete
    cost: float = 0.0  # the stage's cost (the live state keeper's cost model), once it is complete
    on_finish: Callable[[Answer], None] | None = None  # called once a streamed answer has been relayed

    @property
    def status(self) -> int:
        return self.response.status

    def headers(self) -> dict[str, str]:
        """The upstream's end-to-end headers (names lower-cased)."""
        return {k: v for k, v in ((k.lower(), v) for k, v in self.response.headers.items()) if k not in _HOP}


class Proxy:
    """Forwards bodies to pools over one pooled keep-alive ``aiohttp`` session (opened on first use, on the
    serving loop; :meth:`close` ends it).

    aiohttp rather than httpx on the data plane: profiled with py-spy under 200 req/s (``rlroute bench
    router``'s load), ~40 % of the router's CPU went to httpx/httpcore — its pool scans every pooled
    connection (``has_expired``/``is_idle``) for each request, and anyio's socket layer wraps every send.

    Args:
        upstreams: the pools' workers and their state.
        max_connections: keep-alive connections kept to all workers together.
        metrics: the router's metrics.
        policy: attempt budget and backoff.
        connect_timeout_s: connection limit per attempt.
        first_byte_timeout_s: time-to-first-byte limit of a streamed attempt (module doc).
        token_timeout_s: added per token of the cap for a whole answer.
        allow_cross_pool: a pool with no worker left sends the rest of the attempts to the other pool.
        api_key: sent upstream as ``Authorization: Bearer`` (SGLang's ``--api-key``), if set.
    """

    def __init__(self, upstreams: Upstreams, max_connections: int, metrics: RouterMetrics,
                 policy: RetryPolicy, connect_timeout_s: float, first_byte_timeout_s: float, token_timeout_s: float,
                 allow_cross_pool: bool, api_key: str | None = None) -> None:
        self.up = upstreams
        self.max_connections = max_connections
        self.session: aiohttp.ClientSession | None = None
        self.metrics = metrics
        self.policy = policy
        self.connect_s = connect_timeout_s
        self.first_byte_s = first_byte_timeout_s
        self.token_s = token_timeout_s
        self.allow_cross_pool = allow_cross_pool
        self.auth = f"Bearer {api_key}" if api_key else None
        self.rng = random.Random()
        self._urls: dict[tuple[str, str], URL] = {}  # (worker, path) -> parsed URL (yarl parses a str per call)
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            conn = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, keepalive_timeout=60.0)
            # No cookie jar: a worker's Set-Cookie must not reach other clients' requests (and filtering the
            # jar per request is CPU for nothing); no Accept / User-Agent headers the workers do not read.
            self.session = aiohttp.ClientSession(connector=conn, cookie_jar=aiohttp.DummyCookieJar(),
                                                 skip_auto_headers=("User-Agent", "Accept"))
        return self.session

    async def close(self) -> None:
        """Close the session and its connections."""
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _pick(self, pools: list[str], request: Request, tried: dict[str, set[int]],
              extra_tokens: int, prefer: int | None = None) -> tuple[RouterWorker | None, str]:
        """The first pool's in-pool pick (``prefer`` while it is untried and usable) among usable, untried workers
        whose breaker lets the request in."""
        for i, pool in enumerate(pools):
            while True:
                w = self.up.choose(pool, request, tried[pool], extra_tokens if i == 0 else 0,
                                   prefer if i == 0 else None)
                if w is None:
                    break
                tried[pool].add(w.index)
                if w.breaker.acquire():
                    if i > 0:
                        self.metrics.cross_pool.labels(pools[0]).inc()
                    return w, pool
                self.up.monitor.release(w)  # its half-open probe was taken meanwhile
        return None, pools[0]

    async def call(self, pool: str, path: str, body: bytes, request: Request, stream: bool, extra_tokens: int = 0,
                   headers: dict[str, str] | None = None, cross_pool: bool = True, prefer: int | None = None,
                   picked: list[int] | None = None, defer: bool = False) -> Answer:
        """Send ``body`` to ``pool`` (then the other pool if allowed) with the retry rules (module doc).

        Args:
            pool: the decided pool.
            path: upstream path.
            body: request bytes.
            request: the routing view (worker choice, the cap for the time limit).
            stream: the client asked for a stream (a 200 answer is relayed, not read).
            extra_tokens: prompt tokens added to the request's (a hybrid's plan).
            headers: the client's headers to forward (emulation hooks, ``x-request-id``).
            cross_pool: this call may go to the other pool.
            prefer: the worker index of ``pool`` to try first when usable (a pipelined hybrid's warmed worker).
            picked: each attempt's worker index is appended here as it is chosen (before its answer).
            defer: a whole answer's attempt metrics are counted after the current task step (module doc).

        Raises:
            NoUpstream: every attempt failed, or no worker was usable.
        """
        pools = [pool] + (["small" if pool == "large" else "large"] if cross_pool and self.allow_cross_pool else [])
        tried: dict[str, set[int]] = {p: set() for p in pools}
        outcomes: Counter[str] = Counter()
        limit = self.first_byte_s + (0.0 if stream else self.token_s * max(0, request.output_len))
        timeout = self._timeouts.get(limit)
        if timeout is None:
            if len(self._timeouts) > 4096:
                self._timeouts.clear()
            timeout = self._timeouts[limit] = aiohttp.ClientTimeout(total=None, connect=self.connect_s, sock_read=limit)
        session = self._session()
        hdrs = {"content-type": "application/json", **(headers or {})}
        if self.auth:
            hdrs["authorization"] = self.auth
        attempts = 0
        while attempts < self.policy.max_attempts:
            if attempts:
                await asyncio.sleep(self.policy.delay_s(attempts, self.rng))
            w, p = self._pick(pools, request, tried, extra_tokens, prefer)
            if w is None:
                break
            if picked is not None:
                picked.append(w.index)
            attempts += 1
            t0 = time.perf_counter()
            try:
                url = self._urls.get((w.url, path))
                if url is None:
                    url = self._urls[(w.url, path)] = URL(w.url + path)
                r = await session.post(url, data=body, headers=hdrs, timeout=timeout)
            except Exception as e:  # noqa: BLE001 - any failure before the head is a retryable one
                late = isinstance(e, aiohttp.SocketTimeoutError)  # no head in time (a connect timeout is not)
                self._failed(w, p, "first_byte_timeout" if late else "connect_error", outcomes,
                             "time to first byte over the limit" if late else f"connection error ({type(e).__name__})")
                continue
            status = r.status
            t_head = time.perf_counter()
            if self.policy.retryable(status):
                self.metrics.upstream_latency.labels(p).observe(t_head - t0)
                r.release()
                self._failed(w, p, "5xx" if status >= 500 else str(status), outcomes, f"HTTP {status}")
                continue
            if stream and status == 200:
                w.breaker.success()
                a = Answer(r, w, p, attempts, t0, None)
                self._count_attempt(a, t_head)
                return a
            try:  # a whole answer: nothing reached the client yet, so a body cut short is retried too
                content = await r.read()
            except Exception as e:  # noqa: BLE001 - the worker died while sending its body
                r.close()
                self._failed(w, p, "read_error", outcomes, f"answer cut short ({type(e).__name__})")
                continue
            r.release()
            if status < 400:
                w.breaker.success()
            else:
                w.breaker.cancel()  # the request's own fault says nothing about the worker
            a = Answer(r, w, p, attempts, t0, content)
            self._finish(a, content, None, 0)  # the monitor's state, before any later decision reads it
            if defer:
                asyncio.get_running_loop().call_soon(self._count_attempt, a, t_head)
            else:
                self._count_attempt(a, t_head)
            return a
        raise NoUpstream(pools, outcomes, attempts)

    def _failed(self, w: RouterWorker, pool: str, label: str, outcomes: Counter[str], what: str) -> None:
        """Account one failed attempt: release the worker, tell its breaker, count it (metric ``label``; the
        client's message says ``what``)."""
        self.up.monitor.release(w)
        w.breaker.failure()
        outcomes[what] += 1
        self.metrics.upstream.labels(pool, label).inc()

    def _count_attempt(self, a: Answer, t_head: float) -> None:
        """An answered attempt's metrics (its head arrived at ``t_head``)."""
        self.metrics.upstream_latency.labels(a.pool).observe(t_head - a.t_sent)
        self.metrics.upstream.labels(a.pool, "ok" if a.status < 400 else "4xx").inc()

    def _finish(self, a: Answer, last: bytes, t_first: float | None, chunks: int) -> None:
        """Release the worker and account the stage from its answer (``last``: the whole body, or a stream's
        last ``data:`` payload)."""
        res = None
        if a.status == 200 and last.startswith(b"{"):
            t_end = time.perf_counter()
            try:
                body = orjson.loads(last)
            except ValueError:
                body = None
            res = answer_result(body, (t_first or t_end) - a.t_sent, t_end - a.t_sent, chunks,
                                self.up.monitor.clock.speedup)
        if res is None:
            self.up.monitor.release(a.worker)  # nothing to record (an error answer, or no usable body)
        else:
            a.result, a.cost = res, self.up.monitor.complete(a.pool, a.worker, res)
        if a.on_finish is not None:
            a.on_finish(a)

    async def relay(self, a: Answer) -> AsyncGenerator[bytes, None]:
        """The chunks of a streamed answer as they come; a failure after the first byte ends the stream with an
        SSE error event (it cannot be retried: the client has bytes already)."""
        t_first: float | None = None
        chunks = 0
        tail = b""  # the stream's end, enough to hold its last data payload (usage / meta_info)
        ok = False
        try:
            async for chunk in a.response.content.iter_any():
                if t_first is None:
                    t_first = time.perf_counter()
                chunks += chunk.count(b"data:")
                tail = (tail + chunk)[-_TAIL:]
                yield chunk
            ok = True
        except Exception as e:  # noqa: BLE001 - transport failures of any kind once streaming has begun
            a.worker.breaker.failure()
            self.metrics.upstream.labels(a.pool, "midstream_error").inc()
            msg = {"error": {"message": f"upstream worker of pool {a.pool!r} failed mid-stream: {type(e).__name__}",
                             "type": "server_error", "param": None, "code": 502}}
            yield b"data: " + json.dumps(msg).encode() + b"\n\ndata: [DONE]\n\n"
        finally:
            if ok:
                a.response.release()
            else:
                a.response.close()  # the client went away or the worker broke: do not reuse the connection
            self._finish(a, _last_data(tail), t_first, max(0, chunks - 1))


_TAIL = 65536


def _last_data(tail: bytes) -> bytes:
    """The last SSE ``data:`` payload of a stream other than ``[DONE]`` (b"" when there is none)."""
    for event in reversed(tail.split(b"\n\n")):
        line = event.strip()
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload != b"[DONE]":
                return payload
    return b""
