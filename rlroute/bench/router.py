"""``rlroute bench router``: the serving router side by side with sglang-router and with no router, in one run.

Set-up (all real processes on loopback): one large and one small emulated worker with a large speed-up and a
short engine tick (their own latency is small), and three arms in front of the **same** workers:

* ``direct``: the generator spreads its requests over the two workers itself;
* ``rlroute``: ``rlroute serve`` with an exported policy (``--policy``, else a freshly exported one) and
  ``ood.enforce=false``, so every request runs the whole decision path — features, the OOD score and request
  window, ONNX, the action guard — and the policy decides (below);
* ``sglang``: ``sglang-router`` (the Rust wheel) with ``--policy cache_aware`` and its defaults, its own
  ``--prometheus-port``;
* ``floor``: :mod:`rlroute.bench.floor_proxy`, a pass-through on ``rlroute serve``'s HTTP stack (``aiohttp.web``
  on uvloop, one pooled aiohttp client session) with nothing of a router in it: the latency and CPU that stack
  adds before any routing, the floor under the ``rlroute`` arm. ``floor_ratio`` in the result is its p99 added
  over sglang-router's at the headline rate: above the target ratio, no change to rlroute's own code meets the
  target on this stack. ``p99_ratio`` gives both ratios at every rate and ``meets_target`` whether rlroute and
  the floor each met the target (<= 1.5 at 200 and 500 req/s) in the run: over thirteen quiet runs on the 2-core
  VM rlroute met it in none and the floor in four (``experiments/benchmarks/router_repeat.py``), so one run's
  ratio says little on its own.

Load: the open-loop generator :mod:`rlroute.bench.loadgen`, a separate process (aiohttp on uvloop) that
schedules request ``i`` at ``i / rate`` and measures latency from that scheduled time, with a fresh ~600-
character prompt per request and ``max_new_tokens`` 1. For each rate (default 200, 500, 1,000 req/s) the
arms run one after another, ``--reps`` times (default 3) with the order rotated each time (a drift of the
machine's load falls on every arm alike), and each arm's point pools the latencies of its repetitions: its
p50/p90/p99 are over every answered request of the rate (12,000 at 500 req/s). Why: "p99 added" is the
difference of two p99s, and the direct arm's p99 alone moved by up to ~1.4 ms between 8-second windows (quiet
machine, 2026-12-06), more than sglang-router adds — over sixteen single-window runs the headline ratio ranged
from 1.2 to 9.7 and was undefined (sglang-router's p99 added <= 0) in four. Then each arm's highest sustained rate is searched upwards (x1.25
steps, one window each) from its best fixed rate, below the next fixed rate it failed (or ``--max-rate``). A
point is **sustained** only with 0 errors and >= 98 % of the offered rate achieved in every repetition; a
point that is not sustained in some arm reports no added latency (``not sustained``), never a latency.

Why ``ood.enforce=false``: the generator's prompts (support tickets, ``max_new_tokens`` 1) and the idle,
fast workers look nothing like the traffic a policy was trained on, so with the guard enforcing, its request
window refuses every request and the heuristic decides before the graph runs — the rlroute arm would time a
cheaper path than the one it claims. Drawing prompts and output lengths from the policy's own workload would
not fix it (the system and cache blocks of two idle workers at a speed-up of 10,000 are still unlike
training's, and the workers would generate hundreds of tokens per request on the cores the routers are
timed on). With ``enforce`` false (:mod:`rlroute.serve.decision`) the guard does all of its scoring and
the refusal it would make is counted (``rlroute_router_ood_unenforced_total``), then the graph and the action
guard run: every step of a trusted decision plus the refusal's bookkeeping, so the arm's cost is, if
anything, overstated. Each rlroute point records its decisions by source, fallback reason and unenforced
refusals (from ``/metrics`` before and after it); a point where fewer than 95 % of the decisions were the
policy's is flagged (``policy_share_ok`` false, listed in ``flagged``) and reports no added latency.

``--router-override KEY=VALUE`` passes a serve setting to the rlroute arm (e.g. ``gc.freeze=false`` to time
the router without :func:`rlroute.gcsettings.tune_gc`'s freeze).

Headline ``value``: p99 added by rlroute / p99 added by sglang-router at 500 req/s (added = arm p99 - direct
p99), null when either arm did not sustain 500 req/s. The details hold every arm's raw p50/p90/p99, errors,
achieved rates, the sustained rates and the machine's load average around each point — the generator,
the router under test and both workers share the machine's cores, so figures include that contention;
each router's CPU time per answered request (``/proc``) is recorded too, a figure the load inflates less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from rlroute.bench import emit
from rlroute.bench.loadgen import percentiles, sustained

ARMS = ("direct", "rlroute", "sglang", "floor")
POLICY_SHARE = 0.95  # an rlroute point where fewer decisions were the policy's is flagged, not compared
TARGET_RATIO = 1.5  # p99 added of rlroute serve over sglang-router's, at each of TARGET_RATES (issue 14)
TARGET_RATES = ("200", "500")


def p99_ratios(added: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per rate (``added_ms`` of a result): rlroute's and the floor's p99 added over sglang-router's; None where
    an arm was not sustained or sglang-router's p99 added is not above 0 (the ratio is undefined)."""
    out: dict[str, dict[str, float | None]] = {}
    for rate, arms in added.items():
        theirs = arms.get("sglang")
        out[rate] = {arm: round(arms[arm]["p99"] / theirs["p99"], 3)
                     if arms.get(arm) and theirs and theirs["p99"] > 0 else None for arm in ("rlroute", "floor")}
    return out


def meets_target(added: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    """Per arm (rlroute, floor): p99 added <= ``TARGET_RATIO`` x sglang-router's at every one of ``TARGET_RATES``
    in this run (None when a target rate was not run). The floor has nothing of a router in it: where it misses,
    no router on the same HTTP stack meets the target in that run."""
    if not all(r in added for r in TARGET_RATES):
        return {"rlroute": None, "floor": None}
    ratios = p99_ratios(added)
    return {arm: all((x := ratios[r][arm]) is not None and x <= TARGET_RATIO for r in TARGET_RATES)
            for arm in ("rlroute", "floor")}


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds a process used so far (``/proc/<pid>/stat``; 0 without /proc)."""
    if pid is None:
        return 0.0
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _point(urls: list[str], rate: float, duration: float, offset: int, pid: int | None = None,
           router: bool = False, raw: bool = False) -> dict[str, Any]:
    """One open-loop phase in the generator's own process; adds the load average around it and, with ``pid``
    (the router under test), its CPU time per answered request — a figure the machine's load inflates far
    less than latency; with ``router`` (``urls[0]`` is ``rlroute serve``), the point's decisions; with ``raw``,
    the answered requests' latencies (``latencies_ms``, for :func:`_pooled`)."""
    decisions = _decisions(urls[0]) if router else None
    load0 = os.getloadavg()[0]
    cpu0 = _cpu_s(pid)
    cmd = [sys.executable, "-m", "rlroute.bench.loadgen", "--rate", str(rate), "--duration", str(duration),
           "--offset", str(offset), *[x for u in urls for x in ("--url", u)], *(["--raw"] if raw else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 10 + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    res["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    res["sustained"] = sustained(res)
    if pid is not None and res["ok"]:
        res["router_cpu_us_per_request"] = round((_cpu_s(pid) - cpu0) / res["ok"] * 1e6, 1)
    if decisions is not None:
        res["decisions"] = _delta(decisions, _decisions(urls[0]))
        n = sum(res["decisions"]["by_source"].values())
        res["policy_share"] = round(res["decisions"]["by_source"].get("policy", 0.0) / n, 4) if n else None
        res["policy_share_ok"] = n > 0 and res["decisions"]["by_source"].get("policy", 0.0) >= POLICY_SHARE * n
    return res


def _pooled(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's point from its repetitions (each with ``latencies_ms``): percentiles over every answered
    request, counts summed, sustained only if every repetition was, the lowest achieved rate, CPU per answered
    request and decisions over all of them; ``reps`` keeps each repetition's own figures (latencies dropped)."""
    lat = [x / 1e3 for r in reps for x in r.pop("latencies_ms")]
    ok = sum(r["ok"] for r in reps)
    errors: dict[str, int] = {}
    for r in reps:
        for k, v in r["error_kinds"].items():
            errors[k] = errors.get(k, 0) + v
    out: dict[str, Any] = {"offered_rps": reps[0]["offered_rps"], "requests": sum(r["requests"] for r in reps),
                           "ok": ok, "errors": sum(r["errors"] for r in reps), "error_kinds": errors,
                           "achieved_rps": min(r["achieved_rps"] for r in reps), **percentiles(lat),
                           "loadavg_1m": [reps[0]["loadavg_1m"][0], reps[-1]["loadavg_1m"][1]],
                           "sustained": all(r["sustained"] for r in reps)}
    if "router_cpu_us_per_request" in reps[0] and ok:
        out["router_cpu_us_per_request"] = round(
            sum(r.get("router_cpu_us_per_request", 0.0) * r["ok"] for r in reps) / ok, 1)
    if "decisions" in reps[0]:
        total = reps[0]["decisions"]
        for r in reps[1:]:
            total = _sum(total, r["decisions"])
        out["decisions"] = total
        n = sum(total["by_source"].values())
        out["policy_share"] = round(total["by_source"].get("policy", 0.0) / n, 4) if n else None
        out["policy_share_ok"] = all(r["policy_share_ok"] for r in reps)
    out["reps"] = reps
    return out


def _sum(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two :func:`_decisions`-shaped readings added."""
    def add(x: dict[str, float], y: dict[str, float]) -> dict[str, float]:
        return {k: x.get(k, 0.0) + y.get(k, 0.0) for k in {*x, *y}}

    return {"by_source": add(a["by_source"], b["by_source"]),
            "fallback_reasons": add(a["fallback_reasons"], b["fallback_reasons"]),
            "ood_unenforced": a["ood_unenforced"] + b["ood_unenforced"]}


def _added(row: dict[str, Any], arm: str) -> dict[str, float] | None:
    d, a = row["direct"], row[arm]
    if not (d["sustained"] and a["sustained"] and a.get("policy_share_ok", True)):
        return None
    return {q: round(a[f"{q}_ms"] - d[f"{q}_ms"], 3) for q in ("p50", "p90", "p99")}


def _fresh_policy(tmp: Path) -> str:
    out = tmp / "policy"
    cmd = [sys.executable, "-m", "rlroute.cli", "export", "fresh=true", f"out={out}", "n_verify=200"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"export failed: {done.stderr[-2000:]}")
    return str(out)


def main(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; see the module docstring."""
    ap = argparse.ArgumentParser(prog="rlroute bench router", description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="200,500,1000", help="fixed request rates (req/s), comma-separated")
    ap.add_argument("--target-rate", type=float, default=500.0, help="rate of the headline ratio")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per repetition of a point")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every fixed-rate point, arms rotated")
    ap.add_argument("--search-duration", type=float, default=5.0, help="seconds per point of the rate search")
    ap.add_argument("--max-rate", type=float, default=4000.0, help="stop the sustained-rate search here")
    ap.add_argument("--no-search", action="store_true", help="skip the highest-sustained-rate search")
    ap.add_argument("--policy", default=None, help="exported policy folder (default: export a fresh one)")
    ap.add_argument("--speedup", type=float, default=10000.0, help="workers' speed-up factor")
    ap.add_argument("--router-override", action="append", default=[], metavar="KEY=VALUE",
                    help="an rlroute serve override for the rlroute arm (repeatable), e.g. gc.freeze=false")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rates = sorted({float(r) for r in args.rates.split(",") if r} | {args.target_rate})

    from rlroute.cluster.live.launch import (
        WorkerFleet,
        WorkerSpec,
        free_port,
        launch_until_healthy,
        start_sglang_router,
        terminate,
    )
    from rlroute.serve.launch import RouterProc

    tmp = Path(tempfile.mkdtemp(prefix="rlroute-bench-router-"))
    policy = args.policy or _fresh_policy(tmp)
    fast = ["min_tick_s=0.0002", "log_level=error"]
    fleet = WorkerFleet([WorkerSpec("large", "qwen3-235b-a22b-fp8__h100x8", args.speedup, fast),
                         WorkerSpec("small", "qwen3-4b__h100", args.speedup, fast)], tmp)
    fleet.start()
    rows: list[dict[str, Any]] = []
    best: dict[str, float] = {}
    offset = 0
    totals: dict[str, Any] = {}
    try:
        worker_urls = [w.url for w in fleet.workers]
        sg, sg_url = start_sglang_router(worker_urls, tmp / "sglang-router.log")
        procs = [sg]
        try:
            port = free_port()
            floor, floor_url = launch_until_healthy(
                [sys.executable, "-m", "rlroute.bench.floor_proxy", "--port", str(port),
                 *[x for u in worker_urls for x in ("--worker", u)]],
                f"http://127.0.0.1:{port}", tmp / "floor.log", "the floor proxy")
            procs.append(floor)
            with RouterProc(fleet.urls("large"), fleet.urls("small"), tmp / "router.log",
                            ["log_level=error", f"policy.path={policy}", f"speedup={args.speedup}",
                             "ood.enforce=false", *args.router_override]) as router:
                urls = {"direct": worker_urls, "rlroute": [router.url], "sglang": [sg_url], "floor": [floor_url]}
                pids: dict[str, int | None] = {"direct": None, "rlroute": router.proc.pid, "sglang": sg.pid,
                                               "floor": floor.pid}
                for rate in rates:
                    row: dict[str, Any] = {"rate": rate}
                    reps: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
                    for k in range(args.reps):
                        for arm in ARMS[k % len(ARMS):] + ARMS[:k % len(ARMS)]:
                            reps[arm].append(_point(urls[arm], rate, args.duration, offset, pids[arm],
                                                    arm == "rlroute", raw=True))
                            offset += int(rate * args.duration) + 1000
                    for arm in ARMS:
                        row[arm] = _pooled(reps[arm])
                        r = row[arm]
                        print(f"{rate:>6.0f}/s {arm:<8} p50/p90/p99 {r['p50_ms']}/{r['p90_ms']}/{r['p99_ms']} ms "
                              f"achieved {r['achieved_rps']:.0f}/s errors {r['errors']} load {r['loadavg_1m']} "
                              f"cpu/req {r.get('router_cpu_us_per_request')} us policy {r.get('policy_share')}", flush=True)
                    row["added_ms"] = {arm: _added(row, arm) for arm in ARMS[1:]}
                    rows.append(row)
                for arm in ARMS:
                    best[arm] = max((row["rate"] for row in rows if row[arm]["sustained"]), default=0.0)
                    # up from the best fixed rate to the first fixed rate above it that failed (or max_rate)
                    ceiling = min((row["rate"] for row in rows if row["rate"] > best[arm] and not row[arm]["sustained"]),
                                  default=args.max_rate)
                    rate = best[arm]
                    while not args.no_search and best[arm] > 0 and rate * 1.25 < ceiling:
                        rate = rate * 1.25
                        res = _point(urls[arm], rate, args.search_duration, offset, pids[arm], arm == "rlroute")
                        offset += int(rate * args.search_duration) + 1000
                        print(f"search {arm:<8} {rate:>6.0f}/s achieved {res['achieved_rps']:.0f}/s "
                              f"errors {res['errors']} p99 {res['p99_ms']} ms", flush=True)
                        if not (res["sustained"] and res.get("policy_share_ok", True)):
                            break
                        best[arm] = rate
                totals = _decisions(router.url)
        finally:
            terminate(procs)
    finally:
        fleet.stop()
    added = {f"{row['rate']:.0f}": row["added_ms"] for row in rows}
    ratios = p99_ratios(added)
    headline = ratios[f"{args.target_rate:.0f}"]  # the target rate is always one of the fixed rates
    result = {
        "value": headline["rlroute"],
        "unit": "ratio",
        "metric": f"p99 added by rlroute serve / p99 added by sglang-router (cache_aware) at {args.target_rate:.0f} "
                  "req/s, same workers, same run (added = arm p99 - direct p99); null = not sustained",
        "target": "<= 1.5 at 200 and 500 req/s; rlroute's highest sustained rate >= 50 % of sglang-router's",
        "added_ms": added,
        "floor_ratio": headline["floor"],
        "p99_ratio": ratios,
        "meets_target": meets_target(added),
        "max_sustained_rps": best,
        "sustained_ratio": round(best["rlroute"] / best["sglang"], 3) if best.get("sglang") else None,
        "router_cpu_us_per_request": {f"{row['rate']:.0f}": {arm: row[arm].get("router_cpu_us_per_request")
                                                            for arm in ARMS[1:]} for row in rows},
        "rlroute_decisions": totals,
        "flagged": [f"{row['rate']:.0f} req/s: policy decided {row['rlroute'].get('policy_share')}"
                    for row in rows if not row["rlroute"].get("policy_share_ok", True)],
        "policy": policy,
        "duration_s_per_point": args.duration,
        "reps_per_point": args.reps,
        "worker_speedup": args.speedup,
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "command": "rlroute bench router " + " ".join(argv),
        "points": rows,
    }
    emit("router", result, args.out)
    return result


def _decisions(url: str) -> dict[str, Any]:
    """The router's decisions so far (its /metrics): by source, fallbacks by reason, and the OOD guard's
    unenforced refusals."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"by_source": {}, "fallback_reasons": {}, "ood_unenforced": 0.0}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == "rlroute_router_decisions_total":
                out["by_source"][s.labels["source"]] = out["by_source"].get(s.labels["source"], 0.0) + s.value
            elif s.name == "rlroute_router_fallbacks_total":
                out["fallback_reasons"][s.labels["reason"]] = s.value
            elif s.name == "rlroute_router_ood_unenforced_total":
                out["ood_unenforced"] = s.value
    return out


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``after`` - ``before`` of two :func:`_decisions` readings (zero entries left out)."""
    def sub(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: v - b.get(k, 0.0) for k, v in a.items() if v - b.get(k, 0.0)}

    return {"by_source": sub(after["by_source"], before["by_source"]),
            "fallback_reasons": sub(after["fallback_reasons"], before["fallback_reasons"]),
            "ood_unenforced": after["ood_unenforced"] - before["ood_unenforced"]}
