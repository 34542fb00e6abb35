"""Replaying the Mooncake conversation trace on 8 small instances: cache-aware placement raises the
token hit rate over round robin (the seed's claim), with the workload layer's trace loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rlroute.cluster.sim.metrics import summarize
from rlroute.cluster.sim.run import fixed_policy, run

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def replay(shared_data: Path, in_pool: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["cluster=small8", "workload=mooncake", "~quality",
                                           f"cluster/in_pool@cluster.pools.small.in_pool={in_pool}"])
    cfg.workload.path = str(shared_data / "mooncake" / "conversation_trace.jsonl")
    rng = np.random.default_rng(0)
    cluster = instantiate(cfg.cluster, rng=rng)
    comps = run(cluster, instantiate(cfg.workload).requests(rng), fixed_policy("all_small", rng))
    assert len(comps) == 12031 and not any(c.failed for c in comps)
    return summarize(comps, cluster)


@pytest.mark.data
def test_cache_aware_beats_round_robin_on_mooncake(shared_data: Path) -> None:
    aware = replay(shared_data, "cache_aware")["overall"]["token_hit_rate"]
    rr = replay(shared_data, "round_robin")["overall"]["token_hit_rate"]
    assert aware > rr + 0.03, (aware, rr)
