"""``rlroute bench workload``: how long workloads take to load and to iterate.

Envs reset often, so a workload must be cheap to iterate once its files are parsed and its prompts
tokenised. For each workload config this measures, in a fresh process (so caches start cold):

- ``first_s``: the first pass over ``--requests`` requests (file parsing, tokenisation, hashing);
- ``warm_s``: a second pass with the same seed (what every later env reset pays);
- ``reseed_s``: a pass with another seed (new arrival times; prompts mostly already tokenised).

Headline ``value``: warm microseconds per request of ``--workload`` (default ``synthetic``).
Workloads whose data is missing are reported as skipped with the reason.

Usage: ``rlroute bench workload [--workload NAME | --all] [--requests N] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

from rlroute.paths import CONF_DIR

CONF = CONF_DIR / "workload"


def measure(name: str, n: int) -> dict[str, Any]:
    """Time one workload config in this process."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    t = time.perf_counter()
    w = instantiate(cfg, max_requests=n)
    construct = time.perf_counter() - t
    timings = {}
    reqs: list[Any] = []
    for label, seed in (("first_s", 0), ("warm_s", 0), ("reseed_s", 1)):
        t = time.perf_counter()
        reqs = list(w.requests(np.random.default_rng(seed)))
        timings[label] = round(time.perf_counter() - t, 4)
    span = reqs[-1].arrival - reqs[0].arrival if len(reqs) > 1 else 0.0
    return {
        "workload": name,
        "requests": len(reqs),
        "construct_s": round(construct, 4),
        **timings,
        "warm_us_per_request": round(1e6 * timings["warm_s"] / max(len(reqs), 1), 2),
        "mean_input_tokens": round(float(np.mean([r.input_len for r in reqs])), 1),
        "mean_output_tokens": round(float(np.mean([r.output_len for r in reqs])), 1),
        "request_rate": round(len(reqs) / span, 3) if span > 0 else None,
        "share_later_turns": round(float(np.mean([r.turn > 0 for r in reqs])), 3),
    }


def _in_subprocess(name: str, n: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "rlroute.bench.workload", "--one", name, "--requests", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"workload": name, "skipped": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and emit its JSON (see module docstring)."""
    from rlroute.bench import emit

    ap = argparse.ArgumentParser(prog="rlroute bench workload", description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="synthetic", help="config name in conf/workload (headline)")
    ap.add_argument("--all", action="store_true", help="also time every other workload config")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    names = [args.workload]
    if args.all:
        names += sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != args.workload)
    rows = [_in_subprocess(n, args.requests) for n in names]
    head = rows[0]
    if "skipped" in head:
        raise SystemExit(f"workload {args.workload!r} could not run: {head['skipped']}")
    result = {
        "value": head["warm_us_per_request"],
        "unit": "us/request (warm iteration)",
        "config": {"workload": args.workload, "requests": args.requests},
        "workloads": rows,
    }
    return emit("workload", result, args.out)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        ap = argparse.ArgumentParser()
        ap.add_argument("--one")
        ap.add_argument("--requests", type=int, default=10_000)
        a = ap.parse_args()
        print(json.dumps(measure(a.one, a.requests)))
    else:
        main(sys.argv[1:])
