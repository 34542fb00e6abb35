"""Where the decision bench's CPU p99 comes from: which decisions are slow, and how often, on this machine.

Runs the timed loop of ``rlroute bench decision`` (the same inputs: a median-length request of the default
workload, fresh text every time; features, OOD score and request window, ONNX, action guard) and keeps every
decision's thread CPU time and wall-clock start. Reports the decisions more than 30 us above the median: their
share, their median excess, and the wall-clock gap between consecutive ones (its mode: a periodic event shows
as a peak). Then the same for a pure-Python busy loop of about the decision's length, which touches no
library. Also prints the kernel's tick settings when ``/proc/config.gz`` is readable: with
``CONFIG_IRQ_TIME_ACCOUNTING`` off, an interrupt's time is charged to the thread it interrupts.

    .venv/bin/rlroute export fresh=true out=/tmp/dp-policy n_verify=200 overwrite=true
    .venv/bin/python experiments/benchmarks/decision_tail.py --policy /tmp/dp-policy
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np


def summarise(label: str, cpu_ns: np.ndarray, wall_ns: np.ndarray) -> None:
    us = cpu_ns / 1000.0
    p50 = float(np.median(us))
    slow = np.nonzero(us > p50 + 30.0)[0]
    gaps_ms = np.diff(wall_ns[slow]) / 1e6
    mode = None
    if gaps_ms.size:
        hist, edges = np.histogram(gaps_ms[gaps_ms < 20.0], bins=np.arange(0.0, 20.25, 0.25))
        mode = float(edges[int(np.argmax(hist))]) if hist.sum() else None
    print(f"{label}: {len(us)} calls, thread CPU p50 {p50:.1f} us, p99 {np.percentile(us, 99):.1f} us; "
          f"{100 * len(slow) / len(us):.2f} % of them > p50 + 30 us, median excess "
          f"{float(np.median(us[slow])) - p50 if len(slow) else 0.0:.1f} us; wall gap between consecutive slow ones: "
          f"mode {mode} ms (bins of 0.25 ms), median {float(np.median(gaps_ms)) if gaps_ms.size else 0.0:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, required=True)
    ap.add_argument("--iters", type=int, default=20000)
    args = ap.parse_args()
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            keys = ("CONFIG_HZ=", "CONFIG_IRQ_TIME_ACCOUNTING", "CONFIG_NO_HZ_FULL")
            print("kernel:", "; ".join(line.strip() for line in f if line.lstrip("# ").startswith(keys)))
    except OSError:
        print("kernel: /proc/config.gz not readable")
    from hydra import compose, initialize_config_dir

    from rlroute.bench.decision import _serving_request, median_context
    from rlroute.features import FeatureExtractor
    from rlroute.gcsettings import tune_gc
    from rlroute.paths import CONF_DIR
    from rlroute.policies.onnx import OnnxPolicy
    from rlroute.workload.client import client_text

    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config")
    ctx = median_context(cfg, 200, 0)
    req, state, matches, mask = ctx.request, ctx.state, ctx.matches, ctx.mask
    policy, guard = OnnxPolicy(args.policy, ood=False), OnnxPolicy(args.policy).guard
    ex = FeatureExtractor(policy.feature_text)
    body = client_text(req)

    def decide(r: object) -> None:  # as rlroute bench decision's timed loop
        obs = ex.extract(r, state, matches)  # type: ignore[arg-type]
        if guard is not None:
            guard.check(obs)
            if guard.window is not None:
                guard.window.update(obs)
        policy.decide(obs, mask, state)

    for i in range(500):
        decide(_serving_request(req, body, -1 - i, None))
    tune_gc()
    reqs = [_serving_request(req, body, i, None) for i in range(args.iters)]
    cpu, wall = np.empty(args.iters, np.int64), np.empty(args.iters, np.int64)
    for i in range(args.iters):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        decide(reqs[i])
        cpu[i], wall[i] = time.thread_time_ns() - c0, w0
    summarise("decision", cpu, wall)
    target = float(np.median(cpu))
    def busy(n: int) -> int:  # thread CPU of one pass over a pure-Python loop of n steps
        t0 = time.thread_time_ns()
        s = 0
        for j in range(n):
            s += j * j
        return time.thread_time_ns() - t0

    n = 100
    while float(np.median([busy(n) for _ in range(51)])) < target:  # about the decision's median length
        n = int(n * 1.05) + 1
    for i in range(args.iters):
        wall[i] = time.perf_counter_ns()
        cpu[i] = busy(n)
    summarise(f"busy loop ({n} iterations)", cpu, wall)


if __name__ == "__main__":
    main()
