"""How often the p99 target holds, over repeated ``rlroute bench router`` runs: rlroute serve's and the floor's.

For every run file given (the JSON ``rlroute bench router`` writes), per fixed rate: p50 and p99 added (arm −
direct, ms) of ``rlroute``, ``sglang`` (sglang-router) and ``floor`` (the bare aiohttp pass-through,
:mod:`rlroute.bench.floor_proxy`), the ratios rlroute ÷ sglang-router and floor ÷ sglang-router of the p99
added, and whether each meets the issue's target (≤ 1.5 at both 200 and 500 req/s in the same run). Then, over
the runs: how many met it, for rlroute and for the floor, and the median of each ratio. The floor has nothing
of a router in it (no validation, decision, state, retries, metrics), so where the floor misses the target, no
router built on the same HTTP stack can meet it in that run.

    .venv/bin/python experiments/benchmarks/router_repeat.py experiments/benchmarks/router_pooled_*.json

The last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from rlroute.bench.router import TARGET_RATES as RATES
from rlroute.bench.router import TARGET_RATIO as TARGET
from rlroute.bench.router import meets_target, p99_ratios


def run_row(path: Path) -> dict[str, Any]:
    """One run's added latencies, ratios and verdicts (recomputed from ``added_ms``: older runs lack them)."""
    d = json.loads(path.read_text())
    added = d["added_ms"]
    ratios = p99_ratios(added)
    row: dict[str, Any] = {"file": path.name, "time": d.get("time"), "rates": {}}
    for rate in RATES:
        a = added.get(rate)
        if a is None or any(a.get(k) is None for k in ("rlroute", "sglang", "floor")):
            row["rates"][rate] = None  # not run, or an arm did not sustain it
            continue
        row["rates"][rate] = {
            "p50_added_ms": {k: a[k]["p50"] for k in ("rlroute", "sglang", "floor")},
            "p99_added_ms": {k: a[k]["p99"] for k in ("rlroute", "sglang", "floor")},
            "rlroute_ratio": ratios[rate]["rlroute"],
            "floor_ratio": ratios[rate]["floor"],
            "cpu_us_per_request": d["router_cpu_us_per_request"].get(rate),
        }
    verdict = meets_target(added)
    row["rlroute_meets"], row["floor_meets"] = bool(verdict["rlroute"]), bool(verdict["floor"])
    return row


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="rlroute bench router JSON files")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = [run_row(p) for p in args.runs]
    print(f"{'run':<28} {'rate':>5} {'p50 added rl/sg/fl ms':>24} {'p99 added rl/sg/fl ms':>24} "
          f"{'rl/sg':>6} {'fl/sg':>6}")
    for row in rows:
        for rate in RATES:
            r = row["rates"][rate]
            if r is None:
                print(f"{row['file']:<28} {rate:>5}   (not run or not sustained)")
                continue
            p50, p99 = r["p50_added_ms"], r["p99_added_ms"]
            print(f"{row['file']:<28} {rate:>5} {p50['rlroute']:>8.3f}{p50['sglang']:>8.3f}{p50['floor']:>8.3f} "
                  f"{p99['rlroute']:>8.3f}{p99['sglang']:>8.3f}{p99['floor']:>8.3f} "
                  f"{_fmt(r['rlroute_ratio']):>6} {_fmt(r['floor_ratio']):>6}")

    def median(arm: str, rate: str) -> float | None:
        xs = [row["rates"][rate][f"{arm}_ratio"] for row in rows
              if row["rates"][rate] is not None and row["rates"][rate][f"{arm}_ratio"] is not None]
        return round(statistics.median(xs), 2) if xs else None

    summary = {
        "runs": len(rows),
        "target": f"p99 added <= {TARGET} x sglang-router's at 200 and 500 req/s, same run",
        "rlroute_meets": sum(r["rlroute_meets"] for r in rows),
        "floor_meets": sum(r["floor_meets"] for r in rows),
        "median_ratio": {arm: {rate: median(arm, rate) for rate in RATES} for arm in ("rlroute", "floor")},
        "rows": rows,
    }
    print(f"runs {summary['runs']}: rlroute meets the target in {summary['rlroute_meets']}, the floor in "
          f"{summary['floor_meets']}; median ratios {summary['median_ratio']}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
