"""Where ``rlroute serve`` spends its CPU per request: py-spy on the router under ``rlroute bench router``'s load.

Starts the bench's set-up (1 large + 1 small emulated worker at speed-up 10,000, ``rlroute serve`` with an
exported policy and ``ood.enforce=false``, as the bench runs it: the policy decides every request), warms
it, then runs one open-loop phase of :mod:`rlroute.bench.loadgen` (fresh ~600-char ``/generate`` prompts,
``max_new_tokens`` 1) while ``py-spy record --nonblocking`` samples the router. Each
sample's stack is put in the first stage (top of the stack first) whose pattern one of its frames matches;
a stage's CPU per request = its share of the busy samples x the router's CPU seconds in the phase (``/proc``)
/ answered requests. py-spy attached adds some CPU of its own to the router (its reads of the process's
memory): compare rows of one table, not across tables taken with and without it. A sample counts whenever
the router's thread is not idle, runnable but descheduled included: on the 2-core VM a send that wakes the
receiving process often deschedules the sender, so sends look far costlier than their CPU (``user_share_of_cpu``
says how little is system time); ``router_stages.py`` gives thread-CPU figures per stage instead.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python experiments/benchmarks/router_profile.py --policy /tmp/policy \
        --rate 200 --duration 8 --out /tmp/profile.json

The last stdout line is a JSON object (stages, CPU per request, raw collapsed stacks' path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
from rlroute.serve.launch import RouterProc

# (stage, regex on one frame "function (file:line)"). A sample goes to the stage of its innermost frame
# that some stage's pattern matches (stages tried in this order on that frame), so library code is charged
# to the library and a frame of ours to the step that called it; samples whose every frame is the run loop
# itself are the event loop's (uvloop's C code: socket reads and writes, callback dispatch).
STAGES: tuple[tuple[str, str], ...] = (
    ("logging", r"\(logging/"),
    ("metrics (prometheus-client)", r"prometheus_client/(?!parser)|rlroute/serve/metrics\.py"),
    ("request block (features: text hashing, cues)", r"rlroute/features/text\.py|request_block"),
    ("system + cache blocks (features)", r"rlroute/features/"),
    ("ONNX inference", r"onnxruntime/|logits \("),
    ("OOD score + guard", r"rlroute/export/ood\.py|rlroute/policies/"),
    ("decision glue (PolicySlot.decide)", r"rlroute/serve/decision\.py"),
    ("state snapshot", r"state \(rlroute/(cluster/live/monitor|serve/upstream)\.py|rlroute/cluster/base\.py"),
    ("prefix-tree walks", r"prefix_match|radix|_tree|rlroute/cluster/prefix"),
    ("in-pool choice + accounting (monitor)", r"rlroute/cluster/"),
    ("request intake (blocks, token count, ids)", r"rlroute/serve/intake\.py|rlroute/worker/tokens\.py|uuid"),
    ("body decode + validation", r"pydantic|orjson|json/|msgspec|rlroute/worker/schemas\.py"),
    ("upstream HTTP client (aiohttp)", r"aiohttp/(?!web)|yarl/|multidict/|rlroute/serve/proxy\.py"),
    ("control client (health, scrape; httpx, parsing)", r"httpx/|httpcore/|anyio/|h11/|prometheus_client/parser|"
     r"rlroute/serve/upstream\.py"),
    ("router logic (route, headers, errors)", r"rlroute/serve/"),
    ("HTTP server + framework (parse, routing, response write)", r"uvicorn/|starlette/|fastapi/|aiohttp/web|"
     r"granian|opentelemetry|trace/|<frozen os>"),
)
CLIENT, SERVER = STAGES[12][0], STAGES[15][0]
_SHARED = re.compile(r"aiohttp/(http_writer|base_protocol|streams|helpers|http_parser|_http)")
_SIDE = re.compile(r"aiohttp/(client|connector|web)")
LOOP = "event loop (uvloop C: socket I/O, dispatch)"
OTHER = "other"
_RX = [(name, re.compile(pat)) for name, pat in STAGES]


def classify(stack: str) -> str:
    """The stage of one collapsed stack (frames root first, ';'-separated): see :data:`STAGES`."""
    frames = stack.split(";")
    if frames[-1].startswith("Runner.run (asyncio/runners.py"):
        return LOOP  # the run loop's own C code is running
    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        if _SHARED.search(f):  # aiohttp code both sides use: the nearest caller says which side it is
            side = next((g for g in reversed(frames[:i]) if _SIDE.search(g)), "")
            return SERVER if "aiohttp/web" in side else CLIENT
        for name, rx in _RX:
            if rx.search(f):
                return name
    return OTHER


def _user_sys_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far (``/proc/<pid>/stat``)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / tck, int(f[12]) / tck


def profile(policy: str, rate: float, duration: float, speedup: float, overrides: list[str]) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="rlroute-router-profile-"))
    fast = ["min_tick_s=0.0002", "log_level=error"]
    fleet = WorkerFleet([WorkerSpec("large", "qwen3-235b-a22b-fp8__h100x8", speedup, fast),
                         WorkerSpec("small", "qwen3-4b__h100", speedup, fast)], tmp)
    fleet.start()
    try:
        with RouterProc(fleet.urls("large"), fleet.urls("small"), tmp / "router.log",
                        ["log_level=error", f"policy.path={policy}", f"speedup={speedup}", "ood.enforce=false",
                         *overrides]) as router:
            gen = [sys.executable, "-m", "rlroute.bench.loadgen", "--url", router.url]
            subprocess.run([*gen, "--rate", "100", "--duration", "2", "--offset", "10000000"], check=True,
                           capture_output=True)  # warm-up: first-run paths, connections
            raw = tmp / "stacks.txt"
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(router.proc.pid), "--format", "raw", "--rate",
                                    "250", "--nonblocking", "--duration", str(int(duration + 2)), "-o", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)
            (u0, s0), load0 = _user_sys_s(router.proc.pid), os.getloadavg()[0]
            out = subprocess.run([*gen, "--rate", str(rate), "--duration", str(duration), "--offset", "20000000"],
                                 check=True, capture_output=True, text=True)
            u1, s1 = _user_sys_s(router.proc.pid)
            cpu, user = (u1 - u0) + (s1 - s0), u1 - u0
            load1 = os.getloadavg()[0]
            spy.wait(timeout=duration + 60)
            res = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        fleet.stop()
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[classify(stack)] += int(n)
    busy = sum(counts.values())
    per_req = cpu / max(1, res["ok"]) * 1e6
    names = [name for name, _ in STAGES] + [LOOP, OTHER]
    stages = {name: {"share": round(counts[name] / busy, 4), "cpu_us_per_request": round(counts[name] / busy * per_req, 1)}
              for name in names if counts[name]}
    return {"rate": rate, "duration_s": duration, "ok": res["ok"], "errors": res["errors"],
            "achieved_rps": round(res["achieved_rps"], 1), "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
            "router_cpu_us_per_request": round(per_req, 1), "user_share_of_cpu": round(user / max(cpu, 1e-9), 3),
            "busy_samples": busy, "stages": stages,
            "loadavg_1m": [round(load0, 2), round(load1, 2)], "stacks": str(raw)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="exported policy folder")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--speedup", type=float, default=10000.0)
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*", help="extra rlroute serve overrides")
    args = ap.parse_args()
    result = profile(args.policy, args.rate, args.duration, args.speedup, args.overrides)
    for name, s in result["stages"].items():  # type: ignore[union-attr]
        print(f"{name:<52} {s['share'] * 100:5.1f} %  {s['cpu_us_per_request']:7.1f} us/req")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
