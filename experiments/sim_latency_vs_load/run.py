"""Latency vs offered load in the simulator: the Mooncake conversation trace (or the synthetic fallback)
rescaled to a range of request rates, through the default cluster (2 large + 8 small) with fixed routing
rules. Writes results.json and latency_vs_load.png next to this file.

Run:  .venv/bin/python experiments/sim_latency_vs_load/run.py [--max-requests 4000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rlroute.cluster.sim.metrics import summarize
from rlroute.cluster.sim.run import fixed_policy, run
from rlroute.cluster.sim.synthetic import conversation_requests
from rlroute.datasets.store import resolve

HERE = Path(__file__).resolve().parent
CONF = str(HERE.parents[1] / "conf")
RATES = [0.5, 1.0, 2.0, 3.4, 5.0, 7.0, 10.0, 14.0, 20.0]
POLICIES = ["all_small", "all_large", "random"]


def requests(rate: float, n: int, seed: int) -> tuple[list, str]:
    if resolve("mooncake/conversation_trace.jsonl").is_file():
        with initialize_config_dir(config_dir=CONF, version_base=None):
            cfg = compose("config", overrides=["workload=mooncake", "~quality", f"workload.rate={rate}",
                                               f"workload.max_requests={n}"])
        return list(instantiate(cfg.workload).requests(np.random.default_rng(seed))), "mooncake"
    return conversation_requests(n, rate, np.random.default_rng(seed)), "synthetic"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-requests", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        ccfg = compose("config", overrides=["cluster=default", "~quality"]).cluster
    rows = []
    source = ""
    for rate in RATES:
        reqs, source = requests(rate, args.max_requests, args.seed)
        for pol in POLICIES:
            rng = np.random.default_rng(args.seed)
            cluster = instantiate(ccfg, rng=rng)
            for r in reqs:
                r.cache.clear()
            s = summarize(run(cluster, reqs, fixed_policy(pol, rng)), cluster)["overall"]
            rows.append({"rate": rate, "policy": pol, "e2e_mean": s["e2e_s"]["mean"], "e2e_p95": s["e2e_s"]["p95"],
                         "ttft_mean": s["ttft_s"]["mean"], "ttft_p95": s["ttft_s"]["p95"],
                         "tpot_mean": s["tpot_s"]["mean"], "hit_rate": s["token_hit_rate"],
                         "cost_per_1k_usd": 1000 * s["cost_per_request_usd"], "failed": s["failed"]})
            print(json.dumps(rows[-1]))
    probe = instantiate(ccfg, rng=np.random.default_rng(0))
    profiles = {n: f"{p.profile.name} ({p.profile.status})" for n, p in probe.pools.items()}
    (HERE / "results.json").write_text(json.dumps({"workload": source, "max_requests": args.max_requests,
                                                   "seed": args.seed, "profiles": profiles, "rows": rows},
                                                  indent=2) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for pol in POLICIES:
        sel = [r for r in rows if r["policy"] == pol]
        axes[0].plot([r["rate"] for r in sel], [r["e2e_mean"] for r in sel], "o-", label=pol)
        axes[1].plot([r["rate"] for r in sel], [r["ttft_p95"] for r in sel], "o-", label=pol)
    for ax, title in zip(axes, ["mean end-to-end latency", "p95 TTFT"], strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"rlroute simulator: {source} trace rescaled; 2 large {profiles['large']} + 8 small {profiles['small']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "latency_vs_load.png", dpi=120)


if __name__ == "__main__":
    main()
