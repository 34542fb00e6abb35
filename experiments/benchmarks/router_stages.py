"""The router's thread-CPU per request by stage, under ``rlroute bench router``'s load, in one process.

Builds the data plane in-process (:func:`rlroute.serve.app.create_app`; served by aiohttp, or by uvicorn when
the checkout's ``create_app`` still returns an ASGI app), in front of the bench's workers (1 large + 1 small
emulated worker at speed-up 10,000, an exported policy with ``ood.enforce`` false as the bench runs it, so
the policy decides every request: :mod:`rlroute.bench.router`), wraps the router's synchronous stages with
thread-CPU counters (``time.thread_time``) and runs one open-loop phase of :mod:`rlroute.bench.loadgen`
(fresh ~600-character ``/generate`` prompts). Each stage's figure is its thread CPU over the phase divided
by the answered requests; ``total`` is the serving thread's CPU over the phase per request; ``rest`` = total
minus the top-level stages: the HTTP server and client, the event loop and the router's glue (async code,
which a thread-CPU wrapper cannot split). Thread CPU, not wall time: on this VM a send that wakes the
receiving process often deschedules the sender, which a wall-clock or sampling profiler (py-spy, cProfile)
charges to the send although no CPU is spent there.

Each wrapper costs two clock reads (~0.5 us each here), so ``total`` is a little above an unwrapped router's.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python experiments/benchmarks/router_stages.py --policy /tmp/policy

The last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CPU: dict[str, float] = {}
_STACK: list[str] = []


def _wrap(owner: Any, attr: str, stage: str) -> None:
    """Charge ``owner.attr``'s thread CPU to ``stage`` (outermost wrapped call only, per stage)."""
    raw = inspect.getattr_static(owner, attr)
    is_cm = isinstance(raw, classmethod)
    fn: Callable[..., Any] = raw.__func__ if is_cm else getattr(owner, attr)

    @functools.wraps(fn)
    def timed(*a: Any, **kw: Any) -> Any:
        if stage in _STACK:
            return fn(*a, **kw)
        _STACK.append(stage)
        t = time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            CPU[stage] = CPU.get(stage, 0.0) + time.thread_time() - t
            _STACK.pop()

    setattr(owner, attr, classmethod(timed) if is_cm else timed)


# (stage, parent or None, "module:Class.attr" targets); a stage with a parent is shown inside it.
STAGES: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("body validation (pydantic)", None, ("pydantic:BaseModel.model_validate_json",)),
    ("request intake (blocks, token count)", None, ("rlroute.serve.router:Router.build_request",)),
    ("state snapshot", None, ("rlroute.serve.upstream:Upstreams.state",)),
    ("prefix match (decision)", None, ("rlroute.serve.upstream:Upstreams.matches",)),
    ("decision (features + OOD + ONNX + guard)", None, ("rlroute.serve.decision:PolicySlot.decide",)),
    ("request block", "decision (features + OOD + ONNX + guard)",
     ("rlroute.features.extract:FeatureExtractor.request_block",)),
    ("system + cache blocks", "decision (features + OOD + ONNX + guard)", ("rlroute.features.extract:state_features",)),
    ("OOD score + ONNX + guard", "decision (features + OOD + ONNX + guard)",
     ("rlroute.policies.onnx:OnnxPolicy.decide",)),
    ("OOD block scores", "OOD score + ONNX + guard", ("rlroute.export.ood:OodGuard.check",)),
    ("OOD request window", "OOD score + ONNX + guard", ("rlroute.export.ood:ShiftWindow.update",)),
    ("ONNX Runtime (copy in, run, copy out)", "OOD score + ONNX + guard", ("rlroute.policies.onnx:OnnxPolicy.logits",)),
    ("action guard", "OOD score + ONNX + guard", ("rlroute.policies.onnx:guard",)),
    ("in-pool choice (prefix tree walk + insert)", None, ("rlroute.serve.upstream:Upstreams.choose",)),
    ("answer accounting (parse, monitor)", None, ("rlroute.serve.proxy:Proxy._finish",)),
    ("metrics (prometheus-client)", None, ("prometheus_client.metrics:Counter.inc", "prometheus_client.metrics:Gauge.inc",
                                           "prometheus_client.metrics:Gauge.dec",
                                           "prometheus_client.metrics:Histogram.observe",
                                           "prometheus_client.metrics:MetricWrapperBase.labels",
                                           "rlroute.serve.metrics:_Memo.labels")),
    ("scrape parsing (control plane)", None, ("rlroute.cluster.live.pool:parse_metrics",
                                              "rlroute.cluster.live.pool:apply_load")),
)


def _install() -> None:
    import importlib

    for stage, _, targets in STAGES:
        for t in targets:
            mod, _, path = t.partition(":")
            owner: Any = importlib.import_module(mod)
            *parents, attr = path.split(".")
            for p in parents:
                owner = getattr(owner, p, None)
            if owner is not None and hasattr(owner, attr):  # absent in an older checkout: not counted
                _wrap(owner, attr, stage)


async def _serve(app: Any, port: int) -> Callable[[], Any]:
    """Serve ``app`` on 127.0.0.1:port; returns its stop coroutine function."""
    if hasattr(app, "cleanup_ctx"):  # aiohttp
        from aiohttp import web

        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner.cleanup
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)

    async def stop() -> None:
        server.should_exit = True
        await task

    return stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="exported policy folder")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import uvloop

    from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec, free_port
    from rlroute.serve.app import create_app
    from rlroute.serve.config import parse_config

    _install()
    tmp = Path(tempfile.mkdtemp(prefix="rlroute-router-stages-"))
    fast = ["min_tick_s=0.0002", "log_level=error"]
    fleet = WorkerFleet([WorkerSpec("large", "qwen3-235b-a22b-fp8__h100x8", 10000.0, fast),
                         WorkerSpec("small", "qwen3-4b__h100", 10000.0, fast)], tmp)
    fleet.start()
    try:
        cfg = parse_config({"pools": {"large": {"workers": fleet.urls("large")}, "small": {"workers": fleet.urls("small")}},
                            "policy": {"path": args.policy}, "speedup": 10000.0, "log_level": "error",
                            "ood": {"enforce": False}})
        app = create_app(cfg)
        port = free_port()
        gen = [sys.executable, "-m", "rlroute.bench.loadgen", "--url", f"http://127.0.0.1:{port}"]

        async def run() -> tuple[dict[str, Any], float]:
            stop = await _serve(app, port)
            try:  # as ``rlroute serve`` does once started (absent in an older checkout)
                from rlroute.gcsettings import tune_gc
            except ImportError:
                pass
            else:
                tune_gc(cfg.gc_gen0_threshold, cfg.gc_freeze)
            try:
                warm = await asyncio.create_subprocess_exec(*gen, "--rate", "100", "--duration", "2", "--offset",
                                                            "30000000", stdout=subprocess.PIPE)
                await warm.communicate()
                CPU.clear()
                c0 = time.thread_time()
                p = await asyncio.create_subprocess_exec(*gen, "--rate", str(args.rate), "--duration",
                                                         str(args.duration), "--offset", "40000000",
                                                         stdout=subprocess.PIPE)
                out, _ = await p.communicate()
                total = time.thread_time() - c0
            finally:
                await stop()
            return json.loads(out.decode().strip().splitlines()[-1]), total

        load0 = os.getloadavg()[0]
        res, total = uvloop.run(run())
        load1 = os.getloadavg()[0]
    finally:
        fleet.stop()
    n = max(1, res["ok"])
    us = {k: round(v / n * 1e6, 1) for k, v in CPU.items()}
    top = sum(v for (s, parent, _) in STAGES if parent is None for k, v in us.items() if k == s)
    result = {"rate": args.rate, "duration_s": args.duration, "ok": res["ok"], "errors": res["errors"],
              "achieved_rps": round(res["achieved_rps"], 1), "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
              "server": "aiohttp" if hasattr(app, "cleanup_ctx") else "uvicorn + FastAPI",
              "total_cpu_us_per_request": round(total / n * 1e6, 1),
              "stages_cpu_us_per_request": {s: us.get(s, 0.0) for s, _, _ in STAGES},
              "rest_cpu_us_per_request": round(total / n * 1e6 - top, 1),
              "loadavg_1m": [round(load0, 2), round(load1, 2)]}
    for s, parent, _ in STAGES:
        print(f"{'  ' if parent else ''}{s:<52} {us.get(s, 0.0):8.1f} us/req")
    print(f"{'rest: HTTP server + client, event loop, router glue':<52} {result['rest_cpu_us_per_request']:8.1f} us/req")
    print(f"{'total (serving thread)':<52} {result['total_cpu_us_per_request']:8.1f} us/req")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
