"""``rlroute bench replay``: open-loop replay of a workload's timestamps against any SGLang-protocol endpoint.

Each request is sent at ``arrival * time_scale`` wall seconds after the start, whether or not earlier ones
have finished (open loop: a slow endpoint builds a queue instead of slowing the arrivals). The endpoint can
be rlroute's router, an sglang-router instance or a single worker: all speak SGLang's ``POST /generate``.
Requests stream (``stream: true``) so TTFT is measured at the first chunk.

Bodies: what a client sends for the request (:func:`rlroute.workload.client.client_body`, the text the env's
features are computed from): filler standing for a trace's context (block ``h`` -> ``block_size``
pseudo-tokens of text derived from ``h``, so equal prefixes in the trace are equal text prefixes — what
rlroute's router, the emulated worker (4 bytes per pseudo-token) and sglang-router's character radix tree
all key their caches on — and exactly the trace's length), then the prompt text (the newest message, or a
prompt set's whole conversation), and a multi-turn session's ``x-rlroute-session`` header. For prompt-set
workloads the live length is the text's pseudo-token count, not the workload's MiniLM ``input_len``: a
sim-vs-live comparison on them runs the simulator on the router's view of the body (as ``rlroute bench
parity`` does).

Per request (``--records`` JSONL): send time, wall TTFT and e2e, output and cached tokens, the worker's
modelled ``meta_info`` latencies, HTTP status, error, and ``x-rlroute-*`` response headers (the router's
decision). Summary (``emit``): availability, p50/p99 TTFT and e2e (wall and modelled), token-weighted
cache hit rate.

Usage::

    rlroute bench replay --endpoint http://127.0.0.1:8000 [--n 500] [--time-scale 0.01] [workload=mmlu_mooncake]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from rlroute.bench import emit
from rlroute.paths import CONF_DIR
from rlroute.types import Request
from rlroute.worker.tokens import OUTPUT_TOKENS_HEADER
from rlroute.workload.client import client_body


@dataclass(slots=True)
class ReplayRecord:
    """What happened to one replayed request."""

    request_id: int
    arrival: float  # trace seconds
    sent: float  # wall seconds since replay start
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float | None = None  # wall, client-side
    e2e_s: float | None = None
    model_ttft_s: float | None = None  # the worker's meta_info (modelled seconds for emulated workers)
    model_e2e_s: float | None = None
    status: int = 0
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    streamed: bool = False  # asked for SSE
    error_event: bool = False  # the stream ended with an SSE ``error`` event (a failure after the first byte)

    @property
    def ok(self) -> bool:
        """Answered completely with a 2xx."""
        return self.error is None and 200 <= self.status < 300


def request_body(req: Request, stream: bool, caps: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers sent for ``req`` (see the module docstring and :func:`replay`'s ``caps``)."""
    cap = max(int(req.max_new_tokens or req.output_len), int(req.output_len)) if caps else int(req.output_len)
    body, headers = client_body(req, cap)
    body["stream"] = stream
    body["sampling_params"]["temperature"] = 0.0
    if caps:
        headers[OUTPUT_TOKENS_HEADER] = str(int(req.output_len))
    return body, headers


def encoded_body(req: Request, stream: bool, caps: bool) -> tuple[bytes, dict[str, str]]:
    """:func:`request_body` as the JSON bytes sent. :func:`replay` encodes every body before its clock starts:
    encoding one at its send time costs milliseconds of wall time (a long context's filler text), in series
    with the other sends of the same instant, which reorders a burst on its way to the workers."""
    body, headers = request_body(req, stream, caps)
    return orjson.dumps(body), {**headers, "content-type": "application/json"}


async def _one(client: httpx.AsyncClient, url: str, req: Request, rec: ReplayRecord, t_start: float,
               payload: tuple[bytes, dict[str, str]], stream: bool = True) -> None:
    body, headers = payload
    t0 = time.monotonic()
    rec.sent = t0 - t_start
    last: dict[str, Any] = {}
    if not stream:  # one JSON answer: no client-side TTFT, the worker's meta_info still has its own
        try:
            r = await client.post(url + "/generate", content=body, headers=headers)
            rec.status = r.status_code
            rec.headers = {k: v for k, v in r.headers.items() if k.lower().startswith("x-rlroute")}
            if r.status_code >= 300:
                rec.error = r.text[:300]
                return
            last = r.json()
            rec.e2e_s = time.monotonic() - t0
        except (httpx.HTTPError, json.JSONDecodeError) as e:
            rec.error = f"{type(e).__name__}: {e}"[:300]
            return
        _fill(rec, req, last)
        return
    try:
        async with client.stream("POST", url + "/generate", content=body, headers=headers) as r:
            rec.status = r.status_code
            rec.headers = {k: v for k, v in r.headers.items() if k.lower().startswith("x-rlroute")}
            if r.status_code >= 300:
                rec.error = (await r.aread()).decode(errors="replace")[:300]
                return
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                if rec.ttft_s is None:
                    rec.ttft_s = time.monotonic() - t0
                last = json.loads(data)
                if isinstance(last, dict) and "error" in last:  # the router's mid-stream failure event
                    rec.error_event = True
                    rec.error = f"error event: {json.dumps(last['error'])}"[:300]
                    return
        rec.e2e_s = time.monotonic() - t0
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        rec.error = f"{type(e).__name__}: {e}"[:300]
        return
    _fill(rec, req, last)


def _fill(rec: ReplayRecord, req: Request, last: dict[str, Any]) -> None:
    meta = last.get("meta_info") or {}
    if not meta:
        rec.error = "answer without meta_info"
        return
    rec.prompt_tokens = int(meta.get("prompt_tokens", 0))
    rec.output_tokens = int(meta.get("completion_tokens", 0))
    rec.cached_tokens = int(meta.get("cached_tokens", 0) or 0)
    rec.model_e2e_s = float(meta["e2e_latency"]) if meta.get("e2e_latency") is not None else None
    rec.model_ttft_s = float(meta["ttft"]) if meta.get("ttft") is not None else None
    if rec.output_tokens < req.output_len:
        rec.error = f"short answer: {rec.output_tokens} of {req.output_len} tokens"


async def replay(url: str, requests: list[Request], time_scale: float, max_connections: int = 1024,
                 timeout_s: float = 300.0, stream: bool | Collection[int] = True,
                 caps: bool = False) -> list[ReplayRecord]:
    """Send ``requests`` open-loop at ``arrival * time_scale`` wall seconds; return one record each.

    ``stream=False`` asks for one JSON answer (no client-side TTFT; the worker's ``meta_info`` has its own);
    a collection of request ids streams those requests only.
    ``caps``: send the client's cap (``Request.max_new_tokens``) as ``max_new_tokens`` and the reply's trace
    length as the emulated worker's ``x-rlroute-output-tokens`` (through ``rlroute serve``, which passes it
    on; sglang-router does not, so its arms get the trace length as the cap).
    """
    if not requests:
        return []
    base = requests[0].arrival
    recs = [ReplayRecord(r.id, r.arrival, 0.0, streamed=stream if isinstance(stream, bool) else r.id in stream)
            for r in requests]
    payloads = [encoded_body(r, rec.streamed, caps) for r, rec in zip(requests, recs, strict=True)]
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s)) as client:
        # Open a connection before the clock starts, so the first sends are not late; a dead endpoint
        # shows up in the records instead.
        with contextlib.suppress(httpx.HTTPError):
            await client.get(url.rstrip("/") + "/health", timeout=5.0)
        t_start = time.monotonic()
        tasks = []
        for req, rec, payload in zip(requests, recs, payloads, strict=True):
            delay = (req.arrival - base) * time_scale - (time.monotonic() - t_start)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, url.rstrip("/"), req, rec, t_start, payload, rec.streamed)))
        await asyncio.gather(*tasks)
    return recs


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def summarise(recs: list[ReplayRecord]) -> dict[str, Any]:
    """Availability, latency percentiles (wall and modelled) and token-weighted cache hit rate."""
    ok = [r for r in recs if r.ok]
    out: dict[str, Any] = {"n": len(recs), "ok": len(ok), "failed": len(recs) - len(ok),
                           "availability": len(ok) / len(recs) if recs else 0.0}
    for key in ("ttft_s", "e2e_s", "model_ttft_s", "model_e2e_s"):
        xs = [getattr(r, key) for r in ok if getattr(r, key) is not None]
        out[f"p50_{key}"], out[f"p99_{key}"] = _pct(xs, 50), _pct(xs, 99)
    prompt = sum(r.prompt_tokens for r in ok)
    out["cache_hit_rate"] = sum(r.cached_tokens for r in ok) / prompt if prompt else 0.0
    out["output_tokens"] = sum(r.output_tokens for r in ok)
    span = max((r.sent + (r.e2e_s or 0.0) for r in ok), default=0.0)
    out["wall_s"] = span
    errors: dict[str, int] = {}
    for r in recs:
        if not r.ok:
            key = (r.error or f"HTTP {r.status}").split(":")[0][:60]
            errors[key] = errors.get(key, 0) + 1
    out["errors"] = errors
    return out


def strict_outcomes(recs: list[ReplayRecord]) -> dict[str, Any]:
    """A fault run's outcomes counted strictly (issue 14 item 5).

    * ``answered``: a whole 2xx answer (all the requested tokens, no error event).
    * ``lost``: every other request except the streams below — a non-streaming request that got a 5xx, a
      503, a 429, a connection error or a short answer, and a stream that failed before its first byte
      (both could have been retried transparently by the router).
    * ``cut_with_error_event``: a stream that broke after its first byte and ended with an SSE ``error``
      event (it cannot be retried transparently: the client has bytes), reported apart;
      ``cut_silently``: one that broke after its first byte *without* an error event (a violation).

    ``availability`` = answered / submitted. Whether every worker of both pools was down when a request was
    lost (the one case a 503 is not a loss) is the caller's to check from its fault schedule.
    """
    out: dict[str, Any] = {"submitted": len(recs), "answered": 0, "lost": 0, "cut_with_error_event": 0,
                           "cut_silently": 0, "streamed": sum(r.streamed for r in recs)}
    statuses: dict[str, int] = {}
    for r in recs:
        if r.ok:
            out["answered"] += 1
            continue
        if r.streamed and r.ttft_s is not None:  # bytes reached the client before the failure
            out["cut_with_error_event" if r.error_event else "cut_silently"] += 1
            continue
        out["lost"] += 1
        key = f"HTTP {r.status}" if r.status else (r.error or "no answer").split(":")[0][:60]
        statuses[key] = statuses.get(key, 0) + 1
    out["lost_by_status"] = statuses
    out["availability"] = out["answered"] / len(recs) if recs else 0.0
    return out


def load_requests(overrides: list[str], split: str, n: int, seed: int) -> list[Request]:
    """The first ``n`` requests of the configured workload (``workload=...`` override) for ``split``."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    workload = instantiate(cfg.workload, split=split)
    out: list[Request] = []
    for req in workload.requests(np.random.default_rng(seed)):
        out.append(req)
        if len(out) >= n:
            break
    return out


def main(argv: list[str]) -> dict[str, Any]:
    """Entry point of ``rlroute bench replay``."""
    ap = argparse.ArgumentParser(prog="rlroute bench replay", description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True, help="base URL serving POST /generate")
    ap.add_argument("--n", type=int, default=500, help="requests to replay")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="wall seconds per trace second (e.g. 1/speedup of the emulated workers)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-stream", action="store_true", help="non-streaming requests (no client-side TTFT)")
    ap.add_argument("--records", type=Path, default=None, help="write per-request records (JSONL)")
    ap.add_argument("--out", default=None, help="summary JSON (default bench-results/replay.json)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides selecting the workload (workload=...)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.time_scale <= 0:
        ap.error("--n must be >= 1 and --time-scale > 0")
    requests = load_requests(args.overrides, args.split, args.n, args.seed)
    recs = asyncio.run(replay(args.endpoint, requests, args.time_scale, stream=not args.no_stream))
    if args.records:
        args.records.parent.mkdir(parents=True, exist_ok=True)
        with args.records.open("w") as f:
            for r in recs:
                f.write(json.dumps(asdict(r)) + "\n")
    summary = summarise(recs)
    result = {"value": summary["p99_ttft_s"], "unit": "s_p99_ttft_wall", "endpoint": args.endpoint,
              "time_scale": args.time_scale, "workload": args.overrides, "split": args.split, **summary}
    return emit("replay", result, args.out)
