"""rlroute vs sglang-router on the same emulated pools and the same trace (see README.md for the command).

Arms (each repetition replays the same window of ``mmlu_mooncake`` — Mooncake conversation timing and
context blocks x labelled MMLU prompts — open loop, ``speedup`` modelled seconds per wall second):

* ``rlroute_ppo``   rlroute's decision path (features -> exported ONNX policy -> guard) in-process over
                    the live pools (:class:`~rlroute.cluster.live.LiveCluster`: cache_aware inside pools);
* ``rlroute_heuristic`` the same path with the seed heuristic;
* ``sglang_all_large`` one sglang-router (cache_aware, the PyPI wheel) over the large pool, all traffic;
* ``sglang_split``  one sglang-router per pool, a fixed share of requests to the large pool (by request
                    id hash; the share is ``--split-large``);
* ``all_small``     one sglang-router over the small pool, all traffic;
* ``rlroute_http_*`` (``--http``) every request to a real ``rlroute serve`` process over HTTP
                    (:mod:`http_arm`): ``_ppo`` with the exported policy and its OOD guard, ``_ppo_noguard``
                    with the guard off, ``_heuristic`` without a policy (the seed heuristic decides);
                    the in-process ``rlroute_*`` arms stay as controls of the same decision code.

Latencies are the workers' modelled ``meta_info`` values (seconds of the modelled GPU servers; the real
wall-clock HTTP overhead is not sped up and is excluded in every arm alike). Quality is the quality model's
draw for the action taken (``labelled`` MMLU labels for large/small); cost uses the simulator's cost model
on the tokens the workers report; cache hit rate is the delta of the workers' ``sglang:cached_tokens`` /
``sglang:prompt_tokens`` counters over the arm. Intervals: Student-t over repetitions (different windows).
The sim-vs-live gap runs the heuristic arm's requests and actions through the simulator with the same pools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from http_arm import arm as http_arm
from http_arm import fallback_summary

from rlroute.bench.replay import replay, strict_outcomes
from rlroute.cluster.live import LiveCluster
from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec, free_port
from rlroute.cluster.live.scrape import parse_metrics
from rlroute.types import Action, Request

HERE = Path(__file__).resolve().parent
# The default serving profiles (load_profile: measured > derived > estimate), as conf/cluster/default.yaml;
# --estimate-profiles pins the hand-written *.estimate files the first results were produced with.
LARGE, SMALL = "qwen3-235b-a22b-fp8__h100x8", "qwen3-4b__h100"


def window(n: int, rep: int, quality_cfg: str, split: str = "test") -> list[Request]:
    """``n`` consecutive requests of ``split`` starting at a rep-dependent point, with quality draws."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(HERE.parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["workload=mmlu_mooncake", f"quality={quality_cfg}"])
    workload = instantiate(cfg.workload, split=split)
    quality = instantiate(cfg.quality)
    rng = np.random.default_rng(1000 + rep)
    reqs = []
    for r in workload.requests(rng):
        r.quality = quality.draw(r, rng)
        reqs.append(r)
        if len(reqs) >= n:
            break
    t0 = reqs[0].arrival
    for r in reqs:  # each window starts at 0
        r.arrival -= t0
    return reqs


def start_router(urls: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """One sglang-router (cache_aware, CLI defaults) over ``urls``; returns the process and its URL."""
    port, prom = free_port(), free_port()
    cmd = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
           "--worker-urls", *urls, "--policy", "cache_aware", "--prometheus-port", str(prom),
           "--log-level", "warn"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sglang-router exited {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"sglang-router on {url} not healthy; log {log}")


def counters(urls: list[str]) -> tuple[float, float, list[float]]:
    """Summed (cached, prompt) token counters of the workers' /metrics, and requests per worker."""
    cached = prompt = 0.0
    per_worker = []
    for u in urls:
        s = parse_metrics(httpx.get(u + "/metrics", timeout=10).text)
        cached += s.cached_tokens_total
        prompt += s.prompt_tokens_total
        per_worker.append(s.requests_total)
    return cached, prompt, per_worker


def reset_workers(urls: list[str]) -> None:
    """Flush every worker's prefix cache so arms start equal."""
    for u in urls:
        httpx.post(u + "/flush_cache", timeout=10)


def run_rlroute(policy: Any, reqs: list[Request], pools: dict[str, Any], speedup: float) -> list[dict[str, Any]]:
    """rlroute's decision path in-process over the live pools; one row per request."""
    from rlroute.features import extract
    from rlroute.policies.base import DecisionContext

    rows: dict[int, dict[str, Any]] = {}
    done = []
    lags: list[float] = []
    reasons: dict[int, str | None] = {}  # an OnnxPolicy's fallback reason per request (None: it decided)
    with LiveCluster(pools, speedup=speedup) as live:
        live.reset()
        live.prepare(reqs)  # encode every body before the clock starts: none is encoded at its send time
        for r in reqs:
            done += live.advance(r.arrival)
            state = live.state()
            matches = live.prefix_match(r)
            ctx = DecisionContext(r, state, matches, extract(r, state, matches))
            live.submit(r, policy.act(ctx))
            if getattr(policy, "last", None) is not None:
                reasons[r.id] = policy.last.reason
            lags.append(live.now - r.arrival)  # how late (trace s) the decision loop sent it
        done += live.drain(timeout_s=600)
    for c in done:
        rows[c.request_id] = {"id": c.request_id, "action": int(c.action), "ok": not c.failed,
                              "ttft": c.ttft, "e2e": c.e2e, "cached": c.cached_tokens, "prompt": c.prompt_tokens,
                              "cost": c.cost, "quality": bool(c.quality_ok), "error": c.fail_reason,
                              "retries": c.retries, "sent": c.finish - c.e2e}  # cluster time it was sent
        if reasons:
            rows[c.request_id] |= {"source": "fallback" if reasons.get(c.request_id) else "policy",
                                   "reason": reasons.get(c.request_id)}
    print(f"  send lag (trace s): p50 {np.percentile(lags, 50):.3f} p99 {np.percentile(lags, 99):.3f} "
          f"max {max(lags):.3f}", flush=True)
    return [rows[r.id] for r in reqs]


def run_fault(runner: Any, reqs: list[Request], speedup: float, fleet: WorkerFleet,
              every_s: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An rlroute arm (``runner``: reqs -> rows) while a worker is killed (SIGKILL) every ``every_s`` trace
    seconds and restarted (:meth:`WorkerFleet.kill_cycle`: victims cycle over the pools with >= 2 workers,
    one down at a time). Returns the rows and the kill/restart events (wall seconds)."""
    with fleet.kill_cycle(every_s / speedup) as events:
        rows = runner(reqs)
    return rows, list(events)


def run_sglang(reqs: list[Request], endpoints: dict[str, str], large_share: float, speedup: float,
               cost_model: Any, stream: bool = False) -> list[dict[str, Any]]:
    """Open-loop replay through sglang-router(s); requests go large by id hash with ``large_share``."""
    to_large = {r.id: (zlib.crc32(str(r.id).encode()) % 10_000) / 10_000 < large_share for r in reqs}
    parts = {p: [r for r in reqs if to_large[r.id] == (p == "large")] for p in endpoints}

    async def both() -> list[Any]:
        return await asyncio.gather(*(replay(endpoints[p], parts[p], 1.0 / speedup, stream=stream)
                                       for p in endpoints))

    rows = {}
    for p, recs in zip(endpoints, asyncio.run(both()), strict=True):
        act = Action.LARGE if p == "large" else Action.SMALL
        for req, rec in zip(parts[p], recs, strict=True):
            q = req.quality
            rows[req.id] = {"id": req.id, "action": int(act), "ok": rec.ok, "ttft": rec.model_ttft_s,
                            "e2e": rec.model_e2e_s, "cached": rec.cached_tokens, "prompt": rec.prompt_tokens,
                            "cost": cost_model.request_cost(p, rec.prompt_tokens, rec.cached_tokens,
                                                            rec.output_tokens) if rec.ok else 0.0,
                            "quality": bool(q.ok[int(act)]) if q is not None else False, "error": rec.error}
    return [rows[r.id] for r in reqs]


def run_sim(reqs: list[Request], actions: list[int], pools_sim: dict[str, Any],
            arrivals: list[float] | None = None) -> list[dict[str, Any]]:
    """The same requests and actions through the simulator (for the sim-vs-live gap).

    ``arrivals``: replay at these times (the live run's send times) instead of the trace's, so the gap
    measures the instance model alone, not the harness's send lag within bursts of simultaneous arrivals.

    The simulator gets what the live workers get: ``LiveCluster`` sends the client's cap as
    ``max_new_tokens`` and the true length and the answer's blocks as the emulated worker's headers
    (:mod:`rlroute.worker.app`), so both reserve from the cap and cache the answer — except where the worker
    cannot extend the prompt's chain with the answer (the prompt ends inside one of the trace's 512-token
    blocks but past one of the worker's 64-token pages: :func:`rlroute.worker.tokens.answer_blocks`); there
    the simulator gets no ``output_blocks`` either.
    """
    import copy

    from rlroute.cluster.sim import SimCluster

    page = 64  # the emulated worker's page (conf/worker.yaml block_size), as the workers run here
    sim = SimCluster(pools=pools_sim, seed=0)
    order = []
    for i, (r, a) in enumerate(zip(reqs, actions, strict=True)):
        r2 = copy.copy(r)
        if (r.input_len // page) * page > (r.input_len // r.block_size) * r.block_size:
            r2.output_blocks = ()
        if arrivals is not None:
            r2.arrival = max(0.0, float(arrivals[i]))
        order.append((r2, a))
    order.sort(key=lambda x: x[0].arrival)
    for r, a in order:
        sim.submit(r, Action(a))
    done = {c.request_id: c for c in sim.drain()}
    return [{"id": r.id, "ttft": done[r.id].ttft, "e2e": done[r.id].e2e, "cached": done[r.id].cached_tokens,
             "prompt": done[r.id].prompt_tokens, "ok": not done[r.id].failed} for r in reqs]


def summary(rows: list[dict[str, Any]], hit: float | None = None) -> dict[str, float]:
    """Per-arm metrics of one repetition."""
    ok = [x for x in rows if x["ok"]]
    ttft = [x["ttft"] for x in ok if x["ttft"] is not None]
    e2e = [x["e2e"] for x in ok if x["e2e"] is not None]
    prompt = sum(x["prompt"] for x in ok)
    return {
        "quality": float(np.mean([x["quality"] for x in rows])) if "quality" in rows[0] else float("nan"),
        "cost_per_1k": 1000 * float(np.sum([x.get("cost", 0.0) for x in ok])) / len(rows),
        "large_share": float(np.mean([x.get("action", 0) in (0, 2) for x in rows])),
        "p50_ttft": float(np.percentile(ttft, 50)), "p99_ttft": float(np.percentile(ttft, 99)),
        "p50_e2e": float(np.percentile(e2e, 50)), "p99_e2e": float(np.percentile(e2e, 99)),
        "hit_rate": hit if hit is not None else (sum(x["cached"] for x in ok) / prompt if prompt else 0.0),
        "availability": len(ok) / len(rows),
    }


def table(results: dict[str, list[dict[str, float]]], keys: list[str]) -> str:
    """Markdown table of mean [95% CI] over repetitions per arm."""
    from rlroute.eval.stats import t_interval

    lines = ["| arm | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for arm, reps in results.items():
        cells = []
        for k in keys:
            iv = t_interval([r[k] for r in reps])
            cells.append(f"{iv.mean:.4g} [{iv.low:.4g}, {iv.high:.4g}]" if iv.n > 1 else f"{iv.mean:.4g}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=None, help="exported policy folder (rlroute export)")
    ap.add_argument("--n", type=int, default=300, help="requests per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--speedup", type=float, default=10.0)
    ap.add_argument("--large", type=int, default=1, help="large-pool workers")
    ap.add_argument("--small", type=int, default=2, help="small-pool workers")
    ap.add_argument("--split-large", type=float, default=0.3, help="large share of the fixed-ratio split arm")
    ap.add_argument("--quality", default="labelled")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--rlroute-extra", nargs="*", default=[],
                    help="more rlroute arms with registry policies (e.g. all_large: same routing as sglang_all_large)")
    ap.add_argument("--stream", action="store_true",
                    help="sglang arms stream (SSE); default non-streaming like the rlroute arms (see README)")
    ap.add_argument("--estimate-profiles", action="store_true",
                    help="pin the hand-written *.estimate serving profiles instead of the defaults")
    ap.add_argument("--arms", nargs="*", default=None, help="run only these arms (default: all)")
    ap.add_argument("--fault-every", type=float, default=0.0,
                    help="fault run only: kill+restart a worker every this many trace seconds (heuristic arm)")
    ap.add_argument("--http", action="store_true",
                    help="add the arms through a real `rlroute serve` (rlroute_http_*; see http_arm.py)")
    ap.add_argument("--fault-arm", default="rlroute_heuristic",
                    help="the arm the fault run uses (an in-process rlroute_* arm or, with --http, rlroute_http_*)")
    ap.add_argument("--fault-stream-share", type=float, default=0.5,
                    help="fault run through the router: share of requests (by id hash) that stream (SSE)")
    ap.add_argument("--split", default="test", help="workload split the windows are drawn from")
    ap.add_argument("--breaker-cooldown-s", type=float, default=None,
                    help="rlroute_http_* arms: the router's breaker_cooldown_s (default 60 / speedup: sglang-router's "
                         "60 s in trace time, as the kill schedule is; see README 'fault run')")
    ap.add_argument("--startup-timeout", type=float, default=300.0,
                    help="wall seconds a worker may take to answer /health (start and restart; a loaded machine)")
    args = ap.parse_args()
    sfx = ".estimate" if args.estimate_profiles else ""
    large_p, small_p = LARGE + sfx, SMALL + sfx
    from rlroute.cluster.cost import build_cost_model
    from rlroute.cluster.profiles import load_profile
    from rlroute.policies.heuristic import SeedHeuristic

    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    specs = [WorkerSpec("large", large_p, args.speedup)] * args.large + [WorkerSpec("small", small_p, args.speedup)] * args.small
    cost_model = build_cost_model(None, {"large": load_profile(large_p), "small": load_profile(small_p)})
    # The simulator with the workers' own settings (conf/worker.yaml: mem_fraction_static auto, LRU);
    # until 2026-12-05 it ran at 0.88 while the workers ran at auto.
    pools_sim = {p: {"profile": prof, "instances": n, "in_pool": {"_target_": "rlroute.cluster.inpool.CacheAware"},
                     "cache": {"mem_fraction_static": "auto", "eviction": "lru"}}
                 for p, prof, n in (("large", large_p, args.large), ("small", small_p, args.small))}
    from rlroute.policies.registry import make_policy

    policies: dict[str, Any] = {"rlroute_heuristic": SeedHeuristic()}
    policies.update({f"rlroute_{name}": make_policy(name) for name in args.rlroute_extra})
    if args.policy is not None:
        from rlroute.policies.onnx import OnnxPolicy

        policies = {"rlroute_ppo": OnnxPolicy(args.policy, fallback=SeedHeuristic()), **policies}
    results: dict[str, list[dict[str, float]]] = {}
    gaps: list[dict[str, float]] = []
    gaps_sent: list[dict[str, float]] = []
    errors: dict[str, list[str]] = {}
    routers: list[subprocess.Popen[bytes]] = []
    with WorkerFleet(specs, logs, startup_timeout_s=args.startup_timeout) as fleet:
        try:
            lp, large_url = start_router(fleet.urls("large"), logs / "router-large.log")
            sp, small_url = start_router(fleet.urls("small"), logs / "router-small.log")
            routers += [lp, sp]
            all_urls = fleet.urls("large") + fleet.urls("small")
            pools = {"large": {"urls": fleet.urls("large"), "profile": large_p},
                     "small": {"urls": fleet.urls("small"), "profile": small_p}}
            arms: dict[str, Any] = {name: (lambda reqs, p=pol: run_rlroute(p, reqs, pools, args.speedup))
                                    for name, pol in policies.items()}
            arms["sglang_all_large"] = lambda reqs: run_sglang(reqs, {"large": large_url}, 1.0, args.speedup, cost_model,
                                                               args.stream)
            arms["sglang_split"] = lambda reqs: run_sglang(reqs, {"large": large_url, "small": small_url},
                                                           args.split_large, args.speedup, cost_model, args.stream)
            arms["all_small"] = lambda reqs: run_sglang(reqs, {"small": small_url}, 0.0, args.speedup, cost_model,
                                                        args.stream)
            if args.http:
                # The router's reliability clocks run in wall seconds while the workers and the kill schedule run
                # `speedup` x faster: an unscaled 60 s cooldown spans 5 kills at speedup 5 and the open breakers
                # pile up (README, "fault run").
                cooldown = args.breaker_cooldown_s if args.breaker_cooldown_s is not None else 60.0 / args.speedup
                timing = [f"breaker_cooldown_s={cooldown}"]
                http = {"rlroute_http_heuristic": (None, timing)}
                if args.policy is not None:
                    http |= {"rlroute_http_ppo": (args.policy, timing),
                             "rlroute_http_ppo_noguard": (args.policy, [*timing, "ood.enabled=false"])}
                for name, (pol, extra) in http.items():
                    arms[name] = http_arm(fleet, pol, logs, name, extra, args.speedup, cost_model)
            if args.arms:
                unknown = set(args.arms) - set(arms)
                if unknown:
                    raise SystemExit(f"--arms: unknown {sorted(unknown)}; choose from {sorted(arms)}")
                arms = {k: v for k, v in arms.items() if k in args.arms}
            if args.fault_every > 0:
                reqs = window(args.n, 0, args.quality, args.split)
                if args.fault_arm not in arms:
                    raise SystemExit(f"--fault-arm: unknown {args.fault_arm!r}; choose from {sorted(arms)}")
                streamed = frozenset(r.id for r in reqs
                                     if zlib.crc32(f"s{r.id}".encode()) % 10_000 < args.fault_stream_share * 10_000)
                through_router = args.fault_arm.startswith("rlroute_http")

                def runner(rs: list[Request], f: Any = arms[args.fault_arm]) -> list[dict[str, Any]]:
                    return f(rs, streamed) if through_router else f(rs)  # type: ignore[no-any-return]

                t_run = time.monotonic()
                rows, events = run_fault(runner, reqs, args.speedup, fleet, args.fault_every)
                answered = [x for x in rows if x["ok"]]
                fault = {"submitted": len(reqs), "completions": len(rows), "lost": len(reqs) - len(rows),
                         "answered": len(answered), "retried_and_answered": sum(1 for x in answered if x["retries"]),
                         "failed": len(rows) - len(answered), "availability": len(answered) / len(reqs),
                         "kills": len(events), "events": events, "arm": args.fault_arm,
                         **(fallback_summary(rows) if "source" in rows[0] else {}),
                         "fallback_reasons": {k: sum(1 for x in rows if x.get("reason") == k)
                                              for k in sorted({str(x.get("reason")) for x in rows if x.get("reason")})},
                         "fail_reasons": sorted({str(x["error"])[:120] for x in rows if not x["ok"]}),
                         "wall_s": time.monotonic() - t_run, "split": args.split, "speedup": args.speedup}
                if "record" in rows[0]:  # through the router: counted strictly (issue 14 item 5)
                    fault["strict"] = strict_outcomes([x["record"] for x in rows])
                (args.out / "fault.json").write_text(json.dumps(fault, indent=2))
                print(json.dumps(fault, indent=2))
                return
            for rep in range(args.reps):
                reqs = window(args.n, rep, args.quality)
                for arm, fn in arms.items():
                    reset_workers(all_urls)
                    c0, p0, n0 = counters(all_urls)
                    t = time.monotonic()
                    rows = fn(reqs)
                    c1, p1, n1 = counters(all_urls)
                    s = summary(rows, (c1 - c0) / (p1 - p0) if p1 > p0 else 0.0)
                    if "source" in rows[0]:  # through the router: how many decisions were not the policy's
                        s.update(fallback_summary(rows))
                    for x in rows:  # what failed, kept beside the figures
                        if not x["ok"]:
                            errors.setdefault(arm, []).append(f"rep {rep} id {x['id']}: {str(x['error'])[:200]}")
                    s["wall_s"] = time.monotonic() - t
                    results.setdefault(arm, []).append(s)
                    print(f"rep {rep} {arm}: {json.dumps({k: round(v, 4) for k, v in s.items()})} "
                          f"requests per worker {[int(b - a) for a, b in zip(n0, n1, strict=True)]}", flush=True)
                    if arm == "rlroute_heuristic":
                        acts = [x["action"] for x in rows]
                        live_s = summary(rows)
                        ks = ("p50_ttft", "p99_ttft", "p50_e2e", "p99_e2e", "hit_rate")
                        for out, arr in ((gaps, None), (gaps_sent, [x["sent"] for x in rows])):
                            sim = summary(run_sim(reqs, acts, pools_sim, arr))
                            out.append({k: (live_s[k] - sim[k]) / sim[k] if sim[k] else float("nan") for k in ks}
                                       | {f"sim_{k}": sim[k] for k in ks} | {f"live_{k}": live_s[k] for k in ks})
                        print(f"rep {rep} sim-vs-live (trace arrivals): "
                              f"{json.dumps({k: round(v, 4) for k, v in gaps[-1].items()})}", flush=True)
                        print(f"rep {rep} sim-vs-live (live send times): "
                              f"{json.dumps({k: round(v, 4) for k, v in gaps_sent[-1].items()})}", flush=True)
        finally:
            for p in routers:
                p.terminate()
            for p in routers:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
    keys = ["quality", "cost_per_1k", "large_share", "p50_ttft", "p99_ttft", "p50_e2e", "p99_e2e", "hit_rate",
            "availability"]
    if any("fallback_rate" in reps[0] for reps in results.values()):
        reasons = sorted({k for reps in results.values() for r in reps for k in r if k.startswith("fb_")})
        keys += ["fallback_rate", "ood_rate", *reasons]
        for reps in results.values():
            routed = any("fallback_rate" in r for r in reps)  # an arm that reports its decisions' sources
            for r in reps:
                for k in ("fallback_rate", "ood_rate", *reasons):
                    r.setdefault(k, 0.0 if routed else float("nan"))
    ratios: dict[str, list[dict[str, float]]] = {}
    for arm in [a for a in results if a.startswith("rlroute")]:
        for ref in ("sglang_all_large", "sglang_split", "all_small"):
            if ref in results:
                ratios[f"{arm} / {ref}"] = [
                    {k: r[k] / q[k] if q[k] else float("nan") for k in ("cost_per_1k", "p99_ttft", "hit_rate",
                                                                         "quality")}
                    for r, q in zip(results[arm], results[ref], strict=True)]
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "arms": results, "ratios": ratios, "errors": errors,
                                                       "sim_vs_live": gaps, "sim_vs_live_sent": gaps_sent},
                                                      indent=2))
    md = ["## Arms (mean [95% t-interval] over repetitions)", "", table(results, keys), "",
          "## Headline ratios (per repetition, then mean [95% t-interval])", "",
          table(ratios, ["cost_per_1k", "p99_ttft", "hit_rate", "quality"]), "",
          "## Sim-vs-live gap (heuristic arm; relative, live/sim - 1)", "",
          table({"gap (sim at trace arrivals)": gaps, "gap (sim at live send times)": gaps_sent},
                ["p50_ttft", "p99_ttft", "p50_e2e", "p99_e2e", "hit_rate"])]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
