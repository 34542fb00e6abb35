"""Idle CPU of the two routers in front of two idle emulated workers (the bench's set-up, no traffic): ms of CPU per
second over 20 s, per process, from /proc (rlroute.bench.router._cpu_s). Twelfth session, quiet machine:
rlroute 12.0, sglang-router 0.5, each worker 4.5 ms/s (a second run beside a fresh-clone check: 12.5 / 0.5 / 3.5).

    PYTHONPATH=$PWD .venv/bin/python experiments/benchmarks/router_idle_cpu.py
"""
import sys
import tempfile
import time
from pathlib import Path

from rlroute.bench.router import _cpu_s
from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec, start_sglang_router
from rlroute.serve.launch import RouterProc

tmp = Path(tempfile.mkdtemp())
fast = ["min_tick_s=0.0002", "log_level=error"]
fleet = WorkerFleet([WorkerSpec("large", "qwen3-235b-a22b-fp8__h100x8", 10000.0, fast),
                     WorkerSpec("small", "qwen3-4b__h100", 10000.0, fast)], tmp)
fleet.start()
try:
    sg, sg_url = start_sglang_router([w.url for w in fleet.workers], tmp / "sg.log")
    try:
        with RouterProc(fleet.urls("large"), fleet.urls("small"), tmp / "router.log",
                        ["log_level=error", "policy.path=experiments/parity/policy", "speedup=10000",
                         "ood.enforce=false", *sys.argv[1:]]) as router:
            time.sleep(3)
            procs = {"rlroute": router.proc.pid, "sglang": sg.pid,
                     **{f"worker{i}": w.proc.pid for i, w in enumerate(fleet.workers)}}
            t0 = {k: _cpu_s(p) for k, p in procs.items()}
            time.sleep(20)
            print({k: f"{(_cpu_s(p) - t0[k]) / 20 * 1000:.1f} ms/s" for k, p in procs.items()})
    finally:
        sg.terminate()
        sg.wait(timeout=10)
finally:
    fleet.stop()
