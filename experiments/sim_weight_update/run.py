"""Weight updates in the simulator: the seed's coordinated update (pause -> flush -> load -> continue)
against restarting instances, on the Mooncake conversation trace (synthetic fallback without
../shared/data). All requests go to the small pool of the default cluster (8 x Qwen3-4B); at t = 600 s the
pool's weights change and loading takes LOAD_S seconds. Writes results.json and results.md here.

Run:  .venv/bin/python experiments/sim_weight_update/run.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.run import fixed_policy, run
from rlroute.cluster.sim.synthetic import conversation_requests
from rlroute.datasets.store import resolve

HERE = Path(__file__).resolve().parent
CONF = str(HERE.parents[1] / "conf")
T_UPDATE, LOAD_S, N = 600.0, 20.0, 5000
WINDOW = (T_UPDATE - 30.0, T_UPDATE + 300.0)  # requests arriving here are "affected"


def scenarios(n_inst: int) -> dict[str, list[dict[str, Any]]]:
    coordinated = [{"time": T_UPDATE, "event": "update_weights", "pool": "small", "load_time_s": LOAD_S, "flush": True}]
    no_flush = [{**coordinated[0], "flush": False}]
    restart_all = [{"time": T_UPDATE, "event": "fail_instance", "pool": "small", "i": i} for i in range(n_inst)] + \
        [{"time": T_UPDATE + LOAD_S, "event": "recover_instance", "pool": "small", "i": i} for i in range(n_inst)]
    rolling = []
    for i in range(n_inst):
        rolling += [{"time": T_UPDATE + i * LOAD_S, "event": "fail_instance", "pool": "small", "i": i},
                    {"time": T_UPDATE + (i + 1) * LOAD_S, "event": "recover_instance", "pool": "small", "i": i}]
    return {"no update": [], "coordinated (pause, flush, load, continue)": coordinated,
            "coordinated, no flush": no_flush, "restart all instances": restart_all,
            "rolling restart (one at a time)": rolling}


def main() -> None:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["~quality", "cluster=default", "workload=mooncake", f"workload.max_requests={N}"])
    if resolve("mooncake/conversation_trace.jsonl").is_file():
        reqs, source = list(instantiate(cfg.workload).requests(np.random.default_rng(0))), "mooncake"
    else:
        reqs, source = conversation_requests(N, 3.4, np.random.default_rng(0)), "synthetic"
    rows = []
    for name, events in scenarios(8).items():
        rng = np.random.default_rng(0)
        cluster: SimCluster = instantiate(cfg.cluster, rng=rng, events=events)
        comps = run(cluster, reqs, fixed_policy("all_small", rng))
        hit = [c for c in comps if WINDOW[0] <= c.arrival < WINDOW[1]]
        ok = [c for c in hit if not c.failed]
        rows.append({
            "scenario": name,
            "affected_requests": len(hit),
            "failed": len(hit) - len(ok),
            "retries": int(sum(c.retries for c in hit)),
            "e2e_mean_s": float(np.mean([c.e2e for c in ok])),
            "e2e_p99_s": float(np.percentile([c.e2e for c in ok], 99)),
            "ttft_p99_s": float(np.percentile([c.ttft for c in ok], 99)),
            "token_hit_rate": sum(c.cached_tokens for c in hit) / max(1, sum(c.prompt_tokens for c in hit)),
            # (failed at, the router noticed at) per failure the router detected (rlroute/cluster/sim/faults.py)
            "detections_s": [[round(f, 3), round(d, 3)] for f, d in cluster.pools["small"].detections],
        })
        print(json.dumps(rows[-1]))
    (HERE / "results.json").write_text(json.dumps({"workload": source, "requests": N, "t_update": T_UPDATE,
                                                   "load_s": LOAD_S, "window": WINDOW, "rows": rows}, indent=2) + "\n")
    lines = ["| scenario | affected | failed | retries | e2e mean s | e2e p99 s | TTFT p99 s | hit rate |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['scenario']} | {r['affected_requests']} | {r['failed']} | {r['retries']} | {r['e2e_mean_s']:.2f} | "
              f"{r['e2e_p99_s']:.1f} | {r['ttft_p99_s']:.1f} | {r['token_hit_rate']:.3f} |" for r in rows]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
