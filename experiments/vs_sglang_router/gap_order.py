"""Per-request sim-vs-live TTFT diagnostic (the gap section of README.md): same instance or not, per-request ratio.

The heuristic arm's windows through ``LiveCluster`` over 2 large + 8 small emulated workers, then the same
requests and actions through ``SimCluster`` replayed at each completion's ``finish - e2e`` (the worker's
arrival stamp since e55244c; the client's send time before it), at ``mem_fraction_static`` 0.88 and at the
workers' own ``auto``. Prints, per window: the p50/p99 TTFT gap, the share of requests on the same instance
and the median per-request TTFT ratio of both groups, and how many same-instant pairs arrived inverted; writes every request's figures as JSON
(``{rep, live: {id: [ttft, e2e, cached, pools, instances, start, action]}, s088/sauto/strace: {id: [...]}}``;
``strace``: the simulator at the trace arrivals, and the live TTFT with the send lag added back).

    RLROUTE_SHARED_DATA=/work/shared/data .venv/bin/python experiments/vs_sglang_router/gap_order.py 0,1 5 /tmp/gap.json
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402 - the experiment's own helpers

from rlroute.cluster.live import LiveCluster  # noqa: E402
from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec  # noqa: E402
from rlroute.cluster.sim import SimCluster  # noqa: E402
from rlroute.features import extract  # noqa: E402
from rlroute.policies.base import DecisionContext  # noqa: E402
from rlroute.policies.heuristic import SeedHeuristic  # noqa: E402
from rlroute.types import Action, Request  # noqa: E402

IN_POOL = {"_target_": "rlroute.cluster.inpool.CacheAware"}
PAGE = 64  # the workers' prefix-cache page (conf/worker.yaml block_size)


def live_rows(pools: dict[str, Any], reqs: list[Request], speedup: float) -> dict[int, list[Any]]:
    """The seed heuristic deciding over the live pools; per request its completion's figures."""
    pol, done = SeedHeuristic(), []
    with LiveCluster(pools, speedup=speedup) as live:
        live.reset()
        live.prepare(reqs)  # bodies encoded before the clock starts, as run.py's arm
        for r in reqs:
            done += live.advance(r.arrival)
            st, m = live.state(), live.prefix_match(r)
            live.submit(r, pol.act(DecisionContext(r, st, m, extract(r, st, m))))
        done += live.drain(timeout_s=600)
    return {c.request_id: [c.ttft, c.e2e, c.cached_tokens, list(c.pools), list(c.instances), c.finish - c.e2e,
                           int(c.action)] for c in done}


def sim_rows(reqs: list[Request], live: dict[int, list[Any]], mem: float | str,
             at_trace: bool = False) -> dict[int, list[Any]]:
    """The same requests and actions through the simulator, each arriving at its live start (``at_trace``: at
    its trace arrival, as run.py's first gap row)."""
    pools = {p: {"profile": prof, "instances": n, "in_pool": IN_POOL,
                 "cache": {"mem_fraction_static": mem, "eviction": "lru"}}
             for p, prof, n in (("large", R.LARGE, 2), ("small", R.SMALL, 8))}
    sim, order = SimCluster(pools=pools, seed=0), []
    for r in reqs:
        r2 = copy.copy(r)
        r2.arrival = r.arrival if at_trace else max(0.0, live[r.id][5])
        if (r.input_len // PAGE) * PAGE > (r.input_len // r.block_size) * r.block_size:
            r2.output_blocks = ()  # the worker cannot extend this prompt's chain (rlroute.worker.tokens)
        order.append((r2, live[r.id][6]))
    order.sort(key=lambda x: x[0].arrival)
    for r2, a in order:
        sim.submit(r2, Action(a))
    return {c.request_id: [c.ttft, c.e2e, c.cached_tokens, list(c.pools), list(c.instances)] for c in sim.drain()}


def inversions(reqs: list[Request], live: dict[int, list[Any]]) -> str:
    """Pairs of requests with the same trace time on the same instance, and how many reached it (live start)
    in the reverse of trace order."""
    pairs = inverted = 0
    for k, b in enumerate(reqs):
        for a in reqs[:k]:
            if a.arrival == b.arrival and live[a.id][4] == live[b.id][4]:
                pairs += 1
                inverted += live[a.id][5] > live[b.id][5]
    return f"same-instant same-instance pairs {pairs}, inverted live {inverted} ({inverted / max(pairs, 1):.0%})"


def main() -> None:
    reps, speedup, out = [int(x) for x in sys.argv[1].split(",")], float(sys.argv[2]), Path(sys.argv[3])
    specs = [WorkerSpec("large", R.LARGE, speedup)] * 2 + [WorkerSpec("small", R.SMALL, speedup)] * 8
    res = []
    with WorkerFleet(specs, out.with_suffix(".logs"), startup_timeout_s=180.0) as fleet:  # loaded hosts start slowly
        pools = {p: {"urls": fleet.urls(p), "profile": prof, "in_pool": IN_POOL}
                 for p, prof in (("large", R.LARGE), ("small", R.SMALL))}
        for rep in reps:
            reqs = R.window(300, rep, "labelled")
            R.reset_workers(fleet.urls("large") + fleet.urls("small"))
            live = live_rows(pools, reqs, speedup)
            row: dict[str, Any] = {"rep": rep, "live": live}
            for name, mem in (("s088", 0.88), ("sauto", "auto")):
                row[name] = sims = sim_rows(reqs, live, mem)
                lt = np.array([live[r.id][0] for r in reqs])
                st = np.array([sims[r.id][0] for r in reqs])
                same = np.array([live[r.id][4] == sims[r.id][4] for r in reqs])
                ratio = lt / st
                print(rep, name, f"p50 live/sim-1 {np.median(lt) / np.median(st) - 1:.3f}",
                      f"p99 {np.percentile(lt, 99) / np.percentile(st, 99) - 1:.3f}", f"same instance {same.mean():.2f}",
                      f"median ratio same {np.median(ratio[same]) - 1 if same.any() else np.nan:.3f}",
                      f"other {np.median(ratio[~same]) - 1 if (~same).any() else np.nan:.3f}",
                      f"share below 0.7x {np.mean(ratio < 0.7):.2f}", flush=True)
            # at trace arrivals: the live TTFT counts from the worker's arrival stamp, the send lag (decision loop,
            # x speedup) after the trace time; adding it back compares TTFT from the scheduled time
            row["strace"] = st_ = sim_rows(reqs, live, "auto", at_trace=True)
            lt = np.array([live[r.id][0] for r in reqs])
            lag = np.array([live[r.id][5] - r.arrival for r in reqs])
            tt = np.array([st_[r.id][0] for r in reqs])
            print(rep, "trace", f"p50 live/sim-1 {np.median(lt) / np.median(tt) - 1:.3f}",
                  f"p50 (live+lag)/sim-1 {np.median(lt + lag) / np.median(tt) - 1:.3f}",
                  f"lag p50 {np.median(lag):.3f} p99 {np.percentile(lag, 99):.3f}",
                  f"median per-request (sim-live)/lag {np.median((tt - lt)[lag > 0.01] / lag[lag > 0.01]):.2f}",
                  flush=True)
            print(rep, "order", inversions(reqs, live), flush=True)
            res.append(row)
    out.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
