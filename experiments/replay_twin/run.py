"""The traffic replay twin, end to end: ``rlroute serve`` over emulated workers writes a decision log, the log is
replayed through the simulator with its logged actions, and the latencies are compared (README.md).

Usage (from the repository root)::

    python experiments/replay_twin/run.py [--n 400] [--rate 4] [--speedup 10] [--out experiments/replay_twin]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rlroute.cluster.sim import SimCluster
from rlroute.eval.twin import fleet_pools, gap, replay_logged, serve_and_log
from rlroute.paths import REPO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--rate", type=float, default=4.0, help="synthetic workload's mean request rate (modelled req/s)")
    ap.add_argument("--speedup", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--large", type=int, default=2)
    ap.add_argument("--small", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "replay_twin")
    ap.add_argument("--keep-log", action="store_true", help="copy the decision log to --out (~3.6 KB a request)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlroute-twin-"))
    log = work / "decisions.jsonl"
    t0 = time.time()
    client = serve_and_log(log, a.n, a.rate, a.speedup, a.seed, a.large, a.small, work)
    rows = replay_logged(str(log), SimCluster(pools=fleet_pools(a.large, a.small), seed=0))
    g = gap(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.keep_log:
        shutil.copy(log, a.out / "decisions.jsonl")
    shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {"gap_logged_over_sim_minus_1": g, "client": client, "args": {k: str(v) for k, v in vars(a).items()},
              "commit": commit, "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0)), "wall_s": time.time() - t0,
              "actions": {k: sum(r["action"] == i for r in rows) for i, k in enumerate(("large", "small", "hybrid"))}}
    (a.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
