#!/usr/bin/env bash
# Cache-aware vs other in-pool placements on the Mooncake conversation trace, 8 small instances
# (conf/cluster/small8.yaml: Qwen3-4B on 1xH100 each, the seed's small-pool cache preset: LFU, 30 min TTL,
# mem_fraction_static 0.7 -> 325k KV tokens per instance), every request to the small pool.
# Second block: the same with an effectively unbounded KV pool (1e8 tokens, no TTL) to show the ceiling.
# Run from the repo root: bash experiments/sim_cache_placement/run.sh   (~10 s)
set -euo pipefail
OUT=experiments/sim_cache_placement
for pol in cache_aware round_robin shortest_queue power_of_two; do
  .venv/bin/rlroute sim cluster=small8 workload=mooncake sim_policy=all_small max_requests=null '~quality' \
    cluster.pools.small.in_pool.policy=$pol out=$OUT/$pol.json hydra.run.dir=/tmp/rlroute_sim_$pol > /dev/null
  .venv/bin/rlroute sim cluster=small8 workload=mooncake sim_policy=all_small max_requests=null '~quality' \
    cluster.pools.small.in_pool.policy=$pol +cluster.pools.small.cache.kv_capacity_tokens=100000000 \
    cluster.pools.small.cache.ttl_s=null out=$OUT/${pol}_unbounded.json hydra.run.dir=/tmp/rlroute_sim_${pol}_u > /dev/null
done
.venv/bin/python - <<'PY'
import json
from pathlib import Path
d = Path("experiments/sim_cache_placement")
print("| in-pool policy | token hit rate (preset KV) | e2e mean / p99 s | TTFT p50 s | token hit rate (unbounded KV) |")
print("| --- | --- | --- | --- | --- |")
for pol in ["cache_aware", "round_robin", "shortest_queue", "power_of_two"]:
    a = json.loads((d / f"{pol}.json").read_text())["overall"]
    u = json.loads((d / f"{pol}_unbounded.json").read_text())["overall"]
    print(f"| {pol} | {a['token_hit_rate']:.3f} | {a['e2e_s']['mean']:.2f} / {a['e2e_s']['p99']:.1f} | "
          f"{a['ttft_s']['p50']:.3f} | {u['token_hit_rate']:.3f} |")
PY
