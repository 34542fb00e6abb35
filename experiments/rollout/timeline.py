"""Shadow → canary → promotion, and a bad canary rolled back automatically: one timeline through the real
``rlroute serve`` over emulated workers (issue 17 item 5).

Fleet: 1 large ``qwen3-235b-a22b-fp8__h100x8`` + 2 small ``qwen3-4b__h100`` emulated workers (the parity
layout, knee 4 req/s) on 127.0.0.1 at speedup 1 (modelled seconds = wall seconds). Traffic: the built-in
synthetic workload's test split replayed open-loop at ``--rate`` req/s (:func:`rlroute.bench.replay.replay`,
sessions sent as ``x-rlroute-session``, so canaries stick per conversation). Arms:

- incumbent (``policy.path``): ``--incumbent``, by default the vs_sglang_router v4 actor (trained on the
  mmlu + mooncake workload, feature schema v4) served **without its OOD guard** (its manifest's ``ood``
  dropped, as exports before the guard were): its own guard refuses every decision on this synthetic traffic
  (measured in a trial of this script), which would make the incumbent the seed heuristic and its fallback
  rate 1 — against which no candidate's fallback rate can be "worse";
- ``good`` (``--good``): starts as a **shadow** (config), is moved to **canary** (``--share``) at ``--canary-at``
  through the admin API (remove the shadow, add the canary: a mode is changed that way) and **promoted** at
  ``--promote-at`` if it is still active;
- ``bad``: added as a canary at ``--canary-at`` beside ``good``: the good policy exported with an OOD guard
  whose drift thresholds are ``--bad-guard-scale`` × its own (a guard calibrated on too narrow a sample: it
  refuses most decisions, which the fallback decides). The rollback rule (``--window``, ``--min-requests``,
  ``--ttft-slack``; the rest the defaults of ``conf/serve.yaml``) is expected to pause it on its fallback
  rate — nothing in this script pauses it. The p99 TTFT slack is 2 s here (the TTFT SLO of the knee's
  definition): with the default 0.05 s the rule rolls back any candidate that sends more to the large pool
  than the incumbent does (its p99 TTFT is the large pool's, ~1 s, against ~0.05 s all-small) — a latency
  rule cannot tell a quality-seeking candidate from a broken one.

Writes to ``--out``: ``decisions.jsonl`` (the router's decision log: per-arm decisions and propensities,
outcomes), ``events.json`` (admin transitions and the router's rollbacks, seconds since the replay started),
``summary.json`` (per phase and arm: requests acted on, action mix, TTFT p50 / p99, fallback rate; the
shadow's agreement), ``timeline.png``, and the router / worker logs.

Usage::

    python experiments/rollout/timeline.py [--rate 2] [--duration 240] [--canary-at 60] [--promote-at 170]
        [--share 0.25] [--window 100] [--min-requests 30] [--ttft-slack 2] [--out experiments/rollout/timeline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from timeline_report import plot, summarise

from rlroute.bench.replay import load_requests, replay
from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
from rlroute.paths import REPO
from rlroute.serve.launch import RouterProc

LARGE, SMALL = "qwen3-235b-a22b-fp8__h100x8", "qwen3-4b__h100"
TOKEN = "rollout-timeline"  # the admin API's token for this run only, on loopback
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def unguarded(src: Path, dst: Path) -> Path:
    """A copy of export ``src`` without its OOD guard (the manifest's ``ood`` dropped)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m.pop("ood", None)
    (dst / "manifest.json").write_text(json.dumps(m, indent=1))
    return dst


def tight_guard(src: Path, dst: Path, scale: float) -> Path:
    """A copy of export ``src`` whose OOD drift thresholds are ``scale`` x its own (the bad candidate)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["ood"]["thresholds"] = {b: t * scale for b, t in m["ood"]["thresholds"].items()}
    m["ood"]["note"] = f"rollout timeline's bad candidate: thresholds x {scale} of {src}"
    (dst / "manifest.json").write_text(json.dumps(m, indent=1))
    return dst


async def operator(admin: str, a: argparse.Namespace, bad: Path, t0: float, wall0: float,
                   events: list[dict[str, Any]]) -> None:
    """The admin transitions at their times, and a poll of ``/admin/arms`` every 2 s (the rollbacks)."""
    async def call(method: str, path: str, **kw: Any) -> None:
        resp = await c.request(method, admin + path, headers=AUTH, **kw)
        events.append({"t": time.monotonic() - t0, "call": f"{method} {path}", "status": resp.status_code,
                       "body": kw.get("json")})
        if resp.status_code != 200:
            events[-1]["answer"] = resp.text[:300]

    seen = 0
    plan = [(a.canary_at, "canary"), (a.promote_at, "promote")]
    async with httpx.AsyncClient(timeout=60) as c:
        while time.monotonic() - t0 < a.duration + 30:
            now = time.monotonic() - t0
            if plan and now >= plan[0][0]:
                step = plan.pop(0)[1]
                if step == "canary":
                    await call("DELETE", "/admin/arms/good")
                    await call("POST", "/admin/arms", json={"name": "good", "path": str(a.good), "mode": "canary",
                                                             "share": a.share, "sticky": "session"})
                    await call("POST", "/admin/arms", json={"name": "bad", "path": str(bad), "mode": "canary",
                                                             "share": a.share, "sticky": "session"})
                else:
                    arms = (await c.get(admin + "/admin/arms", headers=AUTH)).json()["candidates"]
                    if "good" in arms and not arms["good"]["paused"]:
                        await call("POST", "/admin/arms/good/promote")
                    else:
                        events.append({"t": now, "call": "promotion skipped: good is paused or gone", "status": 0})
            state = (await c.get(admin + "/admin/arms", headers=AUTH)).json()
            for rb in state["rollbacks"][seen:]:
                events.append({"t": rb["at"] - wall0, "call": "rollback", **rb})
            seen = len(state["rollbacks"])
            await asyncio.sleep(2.0)


async def drive(router: RouterProc, a: argparse.Namespace, bad: Path) -> tuple[list[Any], list[dict[str, Any]], float]:
    reqs = load_requests(["workload=synthetic", f"workload.rate={a.rate}"], "test", int(a.rate * a.duration), a.seed)
    events: list[dict[str, Any]] = []
    t0, wall0 = time.monotonic(), time.time()
    op = asyncio.create_task(operator(router.admin_url, a, bad, t0, wall0, events))
    recs = await replay(router.url, reqs, 1.0, stream=False, caps=True)
    op.cancel()
    return recs, events, wall0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--incumbent", type=Path, default=REPO / "experiments/vs_sglang_router/policy_mmlu_mooncake_v4")
    ap.add_argument("--good", type=Path, default=REPO / "experiments/parity/policy")
    ap.add_argument("--bad-guard-scale", type=float, default=0.5)
    ap.add_argument("--rate", type=float, default=2.0, help="req/s (modelled = wall at speedup 1)")
    ap.add_argument("--duration", type=float, default=240.0, help="seconds of traffic")
    ap.add_argument("--canary-at", type=float, default=60.0)
    ap.add_argument("--promote-at", type=float, default=170.0)
    ap.add_argument("--share", type=float, default=0.25, help="each canary's share of the sessions")
    ap.add_argument("--window", type=int, default=100, help="rollback window (answered requests)")
    ap.add_argument("--min-requests", type=int, default=30)
    ap.add_argument("--ttft-slack", type=float, default=2.0, help="rollback p99_ttft_slack_s")
    ap.add_argument("--keep-incumbent-guard", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "experiments/rollout/timeline")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    bad = tight_guard(a.good, a.out / "bad_policy", a.bad_guard_scale)
    inc = a.incumbent if a.keep_incumbent_guard else unguarded(a.incumbent, a.out / "incumbent_policy")
    log = a.out / "decisions.jsonl"
    for f in a.out.glob("decisions.jsonl*"):
        f.unlink()
    fleet = WorkerFleet([WorkerSpec("large", LARGE, 1.0), WorkerSpec("small", SMALL, 1.0),
                         WorkerSpec("small", SMALL, 1.0)], a.out / "workers")
    fleet.start()
    try:
        router = RouterProc(fleet.urls("large"), fleet.urls("small"), a.out / "router.log",
                            [f"policy.path={inc}", f'rollout.candidates=[{{name: good, path: "{a.good}", '
                             'mode: shadow}]', f"rollout.rollback.window={a.window}",
                             f"rollout.rollback.min_requests={a.min_requests}", f"decision_file.path={log}",
                             f"rollout.rollback.p99_ttft_slack_s={a.ttft_slack}",
                             "scrape_interval_s=0.5"], env={"RLROUTE_ADMIN_TOKEN": TOKEN},
                            startup_timeout_s=fleet.timeout)
        try:
            recs, events, wall0 = asyncio.run(drive(router, a, bad))
        finally:
            router.stop()
    finally:
        fleet.stop()
    (a.out / "events.json").write_text(json.dumps(events, indent=1) + "\n")
    summary = summarise(log, events, wall0, recs, vars(a))
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    plot(log, events, wall0, a.out / "timeline.png")
    print(json.dumps({k: summary[k] for k in ("phases", "transitions")}, default=str))
    return summary


if __name__ == "__main__":
    main()
