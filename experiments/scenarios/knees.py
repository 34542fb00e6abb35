"""Measure each pool's knee under a scenario: every request to one pool (a fixed rule), at several loads.

    .venv/bin/python experiments/scenarios/knees.py scenario=provisioned_fleet --rates 10 20 40 --policies all_large all_small

Prints one row per (policy, rate): throughput (completions inside the arrival window per second), TTFT p50/p99, e2e p50/p99 and SLO attainment (TTFT and TPOT
of the scenario's reward). The knee is where TTFT p99 leaves the SLO. The numbers in each
conf/scenario/*.yaml header come from this command (simulator of the commit that wrote them).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from hydra.utils import instantiate

from rlroute.cluster.sim.run import fixed_policy, run
from rlroute.env.build import default_config


def measure(overrides: list[str], policy: str, rate: float, n: int, seed: int) -> dict[str, float]:
    """One fixed-rule run of ``n`` requests at ``rate`` req/s."""
    cfg = default_config([*overrides, f"workload.rate={rate}"])
    rng = np.random.default_rng(seed)
    workload = instantiate(cfg.workload, split="train")
    quality = instantiate(cfg.quality)
    cluster = instantiate(cfg.cluster, rng=rng)
    comps = run(cluster, itertools.islice(workload.requests(rng), n), fixed_policy(policy, rng), quality, rng,
                drain=True)
    ttft = np.array([c.ttft for c in comps if not c.failed])
    e2e = np.array([c.e2e for c in comps if not c.failed])
    last = max(c.arrival for c in comps)  # completions inside the arrival window / its length = capacity when saturated
    ok = [not c.failed and c.ttft <= cfg.reward.slo_ttft_s and c.tpot <= cfg.reward.slo_tpot_s for c in comps]
    return {"throughput": sum(c.finish <= last for c in comps) / last, "ttft_p50": float(np.percentile(ttft, 50)),
            "ttft_p99": float(np.percentile(ttft, 99)), "e2e_p50": float(np.percentile(e2e, 50)),
            "e2e_p99": float(np.percentile(e2e, 99)), "slo": float(np.mean(ok))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--rates", type=float, nargs="+", required=True)
    ap.add_argument("--policies", nargs="+", default=["all_large", "all_small"])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"overrides={args.overrides} n={args.n} seed={args.seed}")
    print(f"{'policy':<10} {'rate':>6} {'thru':>6} {'ttft50':>7} {'ttft99':>7} {'e2e50':>7} {'e2e99':>7} {'slo':>5}")
    for policy in args.policies:
        for rate in args.rates:
            m = measure(args.overrides, policy, rate, args.n, args.seed)
            print(f"{policy:<10} {rate:6.1f} {m['throughput']:6.1f} {m['ttft_p50']:7.2f} {m['ttft_p99']:7.2f} "
                  f"{m['e2e_p50']:7.2f} {m['e2e_p99']:7.2f} {m['slo']:5.2f}", flush=True)


if __name__ == "__main__":
    main()
