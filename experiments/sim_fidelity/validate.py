"""Re-simulate the published serving measurements of ``points.json`` and write ``results.json``.

Each point names a shipped serving profile and the setup as published (engine, model, GPUs, prompt and
output lengths, number of prompts, concurrency). The simulator runs one instance of that profile with
the cluster's defaults (SGLang's dedicated-server ``mem_fraction_static``, no prefix sharing: the
benchmarks' prompts are random or distinct) and measures the published metric the way the benchmark
client does:

* ``closed loop`` (``max_concurrency`` clients): each client sends its next request when the previous one
  finishes, ``num_prompts`` in all;
* ``burst``: every prompt is sent at t = 0 (``vllm bench serve`` without ``--request-rate``);
* ``mean_ttft_ms`` / ``mean_tpot_ms``: means over requests (TPOT excludes the first token);
  ``output_tok_per_s`` / ``total_tok_per_s``: generated (+ prompt) tokens over the benchmark duration
  (first send to last finish).

Every request gets the published mean lengths (per-request lengths were not published): an approximation
stated in ``points.json``. Nothing here is fitted to the points.

Run (CPU, a few seconds)::

    .venv/bin/python experiments/sim_fidelity/validate.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.cluster.profiles import load_profile
from rlroute.cluster.sim import SimCluster
from rlroute.types import Action, Completion, Request

HERE = Path(__file__).resolve().parent
POOL = "small"  # one pool; its name only selects the token prices, which no metric here uses


def lengths(point: dict[str, Any]) -> tuple[int, int]:
    """The published mean prompt and output lengths of a point (tokens)."""
    s = point["setup"]
    n = s["num_prompts"]
    return max(1, round(s["total_input_tokens"] / n)), max(1, round(s["total_output_tokens"] / n))


def simulate(point: dict[str, Any], kv_capacity_tokens: int | None = None,
             scheduler: dict[str, Any] | None = None) -> tuple[list[Completion], float]:
    """Run a point's setup; return the completions and the benchmark duration (s). ``kv_capacity_tokens``
    and ``scheduler`` override the profile's KV pool and the pool's scheduler config (diagnostics, never
    used for results.json)."""
    sim, setup = point["sim"], point["setup"]
    n_in, n_out = lengths(point)
    n = int(setup["num_prompts"])
    pools = {POOL: {"profile": sim["profile"], "instances": int(sim.get("instances", 1)),
                    "cache": {"mem_fraction_static": "auto", "eviction": "lru", "kv_capacity_tokens": kv_capacity_tokens},
                    "in_pool": {"_target_": "rlroute.cluster.inpool.RoundRobin"}, "scheduler": scheduler}}
    cl = SimCluster(pools=pools)
    conc = setup.get("max_concurrency")
    sent = 0
    comps: list[Completion] = []

    def send(t: float) -> None:
        nonlocal sent
        cl.submit(Request(id=sent, arrival=t, input_len=n_in, output_len=n_out), Action.SMALL)
        sent += 1

    for _ in range(min(n, int(conc)) if conc else n):
        send(0.0)
    while cl.in_flight:
        done = cl.advance(cl.next_event_time())
        comps += done
        for _ in done:
            if conc and sent < n:
                send(cl.now)
    if len(comps) != n or any(c.failed for c in comps):
        raise RuntimeError(f"{point['id']}: {sum(c.failed for c in comps)} of {len(comps)} requests failed")
    return comps, max(c.finish for c in comps)


def measure(point: dict[str, Any], kv_capacity_tokens: int | None = None,
            scheduler: dict[str, Any] | None = None) -> float:
    """The point's metric, simulated."""
    comps, duration = simulate(point, kv_capacity_tokens, scheduler)
    metric = point["metric"]
    if metric == "mean_ttft_ms":
        return float(np.mean([c.ttft for c in comps]) * 1e3)
    if metric == "mean_tpot_ms":
        return float(np.mean([c.tpot for c in comps]) * 1e3)
    out = sum(c.output_tokens for c in comps)
    if metric == "output_tok_per_s":
        return out / duration
    if metric == "total_tok_per_s":
        return (out + sum(c.prompt_tokens for c in comps)) / duration
    raise ValueError(f"{point['id']}: unknown metric {metric!r}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(points_path: Path = HERE / "points.json", kv_capacity_tokens: int | None = None,
        scheduler: dict[str, Any] | None = None) -> dict[str, Any]:
    """Simulate every point; the results document."""
    points = json.loads(points_path.read_text())["points"]
    rows = []
    for p in points:
        sim = measure(p, kv_capacity_tokens, scheduler)
        prof = load_profile(p["sim"]["profile"])
        rows.append(dict(id=p["id"], kind=p["kind"], load=p["load"],
                         source=p["source"].get("url") or p["source"]["title"],
                         setup=dict(p["setup"], mean_lengths=lengths(p), profile=prof.name, profile_status=prof.status),
                         metric=p["metric"], published=p["published"], simulated=round(sim, 4),
                         rel_error=round(sim / p["published"] - 1.0, 4)))
    errs = [abs(r["rel_error"]) for r in rows]
    return dict(command=".venv/bin/python experiments/sim_fidelity/validate.py", commit=_commit(), points=rows,
                median_abs_rel_error=round(float(np.median(errs)), 4), max_abs_rel_error=round(max(errs), 4))


def main(argv: list[str] | None = None) -> int:
    """Write results.json and print one line per point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--kv-capacity-tokens", type=int, default=None,
                    help="diagnostic: override every instance's KV pool (write elsewhere than results.json)")
    ap.add_argument("--scheduler", type=json.loads, default=None,
                    help='diagnostic: the pools\' scheduler config as JSON, e.g. \'{"kind": "sglang", "mixed_chunk": true}\'')
    args = ap.parse_args(argv)
    diagnostic = args.kv_capacity_tokens is not None or args.scheduler is not None
    if diagnostic and args.out == HERE / "results.json":
        ap.error("--kv-capacity-tokens / --scheduler are diagnostics: pass --out to write them elsewhere")
    res = run(kv_capacity_tokens=args.kv_capacity_tokens, scheduler=args.scheduler)
    if diagnostic:
        res["diagnostic"] = {"kv_capacity_tokens": args.kv_capacity_tokens, "scheduler": args.scheduler}
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for r in res["points"]:
        print(f"{r['id']:48s} {r['metric']:17s} published {r['published']:>10} simulated {r['simulated']:>10} "
              f"error {r['rel_error']:+.1%}")
    print(f"median |error| {res['median_abs_rel_error']:.1%}, max {res['max_abs_rel_error']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
