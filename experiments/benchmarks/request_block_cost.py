"""Cold request-block cost per workload request in the env (the one-text-path change, schema v4).

The env computes each request's block once (then ``request.cache`` and the content memo answer); a trace
row is new at every step of an episode, so on trace workloads this cold cost is paid per decision. Per
workload: the first ``--n`` requests of the test split (materialised before timing), the process memos
cleared, then ``FeatureExtractor().request_block`` timed per request on this thread's CPU clock, one core;
then the same rows again as new request objects (``memo``: what the next episode over the window pays).
Runs on whatever ``rlroute`` is importable, so the same file times the code before and after a change::

    PYTHONPATH=/tmp/base .venv/bin/python experiments/benchmarks/request_block_cost.py   # before
    .venv/bin/python experiments/benchmarks/request_block_cost.py                        # after

With ``--bodies FILE`` it times the router's side instead: each body of ``FILE`` (JSON lines ``{"workload",
"text"}``, written by ``--write-bodies FILE`` from :func:`rlroute.workload.client.client_text` — the bodies
the replay client sends) built into a request as ``rlroute serve`` builds it (outside the timed region, as in
``rlroute bench decision``), then its request block timed cold, so before and after time the same bodies.

The last stdout line is JSON: per workload, p50 / p99 / mean CPU microseconds per request.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path

import numpy as np

from rlroute.bench.replay import load_requests
from rlroute.features import FeatureExtractor
from rlroute.types import Request


def _stats(ns: np.ndarray) -> dict[str, float]:
    us = ns / 1e3
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "mean_us": round(float(us.mean()), 1)}


def _served(path: Path, name: str) -> list[Request]:
    """The bodies of ``name`` in ``path`` as the router builds requests from them."""
    from rlroute.serve.intake import SessionTable, client_request

    table = SessionTable()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [client_request(i, 0.0, row["text"], None, 256, 64, table) for i, row in enumerate(rows)
            if row["workload"] == name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workloads", nargs="+", default=["mooncake", "mmlu_mooncake", "synthetic"])
    ap.add_argument("--bodies", type=Path, default=None, help="time the router's side on these bodies")
    ap.add_argument("--write-bodies", type=Path, default=None, help="write the workloads' client bodies and exit")
    a = ap.parse_args()
    if a.write_bodies is not None:
        from rlroute.workload.client import client_text

        with a.write_bodies.open("w") as f:
            for name in a.workloads:
                for r in load_requests([f"workload={name}"], "test", a.n, 0):
                    f.write(json.dumps({"workload": name, "text": client_text(r)}) + "\n")
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    res: dict[str, object] = {"load_avg": os.getloadavg(), "side": "router" if a.bodies else "env"}
    for name in a.workloads:
        reqs = _served(a.bodies, name) if a.bodies else load_requests([f"workload={name}"], "test", a.n, 0)
        importlib.import_module("rlroute.features.extract")._BLOCK_MEMO.clear()
        importlib.import_module("rlroute.features.text")._CUES_MEMO.clear()
        fx = FeatureExtractor()
        ns = np.empty(len(reqs), dtype=np.int64)
        for i, r in enumerate(reqs):
            t0 = time.thread_time_ns()
            fx.request_block(r)
            ns[i] = time.thread_time_ns() - t0
        res[name] = {"requests": len(reqs), **_stats(ns)}
        if not a.bodies:  # the same rows as new Request objects (the next episode): the content memo answers
            again = load_requests([f"workload={name}"], "test", a.n, 0)
            for i, r in enumerate(again):
                t0 = time.thread_time_ns()
                fx.request_block(r)
                ns[i] = time.thread_time_ns() - t0
            res[name]["memo"] = _stats(ns)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
