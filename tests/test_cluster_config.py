"""Hydra configs of the cluster group, construction paths, cost models and config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rlroute.cluster.cost import GpuSecondsCost, TokenPriceCost
from rlroute.cluster.inpool import CacheAware, PowerOfTwo, RoundRobin, ShortestQueue
from rlroute.cluster.sim import EVENTS, SimCluster, build_cluster, cluster_factory
from rlroute.types import Action, Request

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = {"profile": "qwen3-4b__h100", "instances": 2}


def cluster_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=["~quality", *overrides]).cluster


# The simulated clusters; conf/cluster/live.yaml (HTTP workers) is covered by tests/test_live_factory.py.
SIM_CONFIGS = sorted(p.stem for p in (CONF / "cluster").glob("*.yaml") if "rlroute.cluster.live" not in p.read_text())


@pytest.mark.parametrize("name", SIM_CONFIGS)
def test_every_cluster_config_instantiates(name: str) -> None:
    cfg = cluster_cfg(f"cluster={name}")
    cl = instantiate(cfg, rng=np.random.default_rng(0))
    assert isinstance(cl, SimCluster)
    same = build_cluster(cfg, np.random.default_rng(0))
    fast = cluster_factory(cfg)(np.random.default_rng(0))
    for other in (same, fast):
        assert {k: (len(p.instances), p.kv_cap, p.eviction, p.ttl_s) for k, p in cl.pools.items()} == \
               {k: (len(p.instances), p.kv_cap, p.eviction, p.ttl_s) for k, p in other.pools.items()}


def test_default_cluster_is_the_deployable_dedicated_one() -> None:
    cl = instantiate(cluster_cfg("cluster=default"), rng=np.random.default_rng(0))
    large, small = cl.pools["large"], cl.pools["small"]
    assert (len(large.instances), len(small.instances)) == (4, 8)
    assert large.profile.name == "qwen3-235b-a22b-fp8__h100x4" and large.profile.num_gpus == 4
    # SGLang's dedicated-server defaults on an H100 (81,559 MiB): TP4 0.824, TP1 0.835; the seed's eviction/TTL
    assert (large.mem_fraction_static, large.eviction, large.ttl_s) == (0.824, "lru", 14400.0)
    assert (small.mem_fraction_static, small.eviction, small.ttl_s) == (0.835, "lfu", 1800.0)
    # KV from the model config: 94 layers x 1 KV head x 128 x 2 x 2 B per rank, 4 ranks; 1 GB/GPU overhead
    assert large.kv_cap == int(((85.52 * 0.824 - 1.0) * 4 - 236.3) * 1e9 / (94 * 128 * 2 * 2 * 4))
    assert small.kv_cap == int((85.52 * 0.835 - 8.04) * 1e9 / 147456)
    assert cl.max_retries == 4 and cl.faults.detection == "health_check"
    pol = small.policy
    assert isinstance(pol, CacheAware) and (pol.cache_threshold, pol.abs, pol.rel) == (0.3, 64, 1.5)


def test_h200_cluster_has_the_default_pools_on_h200_profiles() -> None:
    default = instantiate(cluster_cfg("cluster=default"), rng=np.random.default_rng(0))
    cl = instantiate(cluster_cfg("cluster=h200"), rng=np.random.default_rng(0))
    assert {k: (len(p.instances), p.profile.num_gpus, p.eviction, p.ttl_s) for k, p in cl.pools.items()} == \
           {k: (len(p.instances), p.profile.num_gpus, p.eviction, p.ttl_s) for k, p in default.pools.items()}
    large, small = cl.pools["large"], cl.pools["small"]
    assert (large.profile.name, small.profile.name) == ("qwen3-235b-a22b-fp8__h200x4", "qwen3-4b__h200")
    # SGLang's dedicated-server defaults on an H200 (143,771 MiB): TP4 0.900, TP1 0.907
    assert (large.mem_fraction_static, small.mem_fraction_static) == (0.9, 0.907)
    assert large.kv_cap > default.pools["large"].kv_cap and small.kv_cap > default.pools["small"].kv_cap


def test_colocated_cluster_carries_the_seed_presets() -> None:
    cl = instantiate(cluster_cfg("cluster=colocated"), rng=np.random.default_rng(0))
    large, small = cl.pools["large"], cl.pools["small"]
    assert (len(large.instances), len(small.instances)) == (2, 8)
    assert (large.mem_fraction_static, large.eviction, large.ttl_s) == (0.5, "lru", 14400.0)
    assert (small.mem_fraction_static, small.eviction, small.ttl_s) == (0.7, "lfu", 1800.0)
    assert large.profile.num_gpus == 8 and small.profile.num_gpus == 1


def test_tp8ep_cluster_runs_the_expert_parallel_profile() -> None:
    cl = instantiate(cluster_cfg("cluster=tp8ep"), rng=np.random.default_rng(0))
    large = cl.pools["large"]
    assert large.profile.name == "qwen3-235b-a22b-fp8-ep__h100x8" and large.mem_fraction_static == 0.818
    assert len(large.instances) * large.profile.num_gpus == 16  # the same GPUs as the default's 4 x TP4


def test_cache_preset_is_a_config_group() -> None:
    cl = instantiate(cluster_cfg("cluster=default", "cluster/cache@cluster.pools.small.cache=lru"))
    assert (cl.pools["small"].eviction, cl.pools["small"].ttl_s) == ("lru", None)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "cluster" / "scheduler").glob("*.yaml")))
def test_scheduler_preset_is_a_config_group(preset: str) -> None:
    from rlroute.cluster.sim.legacy_instance import LegacyInstance
    from rlroute.cluster.sim.sglang_instance import SGLangInstance

    cl = instantiate(cluster_cfg("cluster=default", f"cluster/scheduler@cluster.pools.large.scheduler={preset}"))
    large, small = cl.pools["large"], cl.pools["small"]
    want = LegacyInstance if preset == "legacy" else SGLangInstance
    assert all(type(i) is want for i in large.instances)
    assert all(type(i) is SGLangInstance for i in small.instances)  # the default
    assert large.sched.mixed_chunk == (preset == "sglang_mixed")
    assert large.sched.schedule_policy == ("lpm" if preset == "sglang_lpm" else "fcfs")


@pytest.mark.parametrize(("preset", "cls"), [("cache_aware", CacheAware), ("round_robin", RoundRobin),
                                             ("shortest_queue", ShortestQueue), ("power_of_two", PowerOfTwo)])
def test_in_pool_policy_switch_by_override(preset: str, cls: type) -> None:
    cfg = cluster_cfg("cluster=small8", f"cluster/in_pool@cluster.pools.small.in_pool={preset}")
    assert type(instantiate(cfg).pools["small"].policy) is cls
    assert type(cluster_factory(cfg)(np.random.default_rng(0)).pools["small"].policy) is cls  # the env's builder


def test_token_cost_uses_list_prices_and_gpu_seconds_is_selectable() -> None:
    cl = SimCluster(pools={"small": SMALL})
    assert isinstance(cl.cost_model, TokenPriceCost)
    assert cl.cost_model.request_cost("small", 1000, 200, 100) == pytest.approx((800 * 0.11 + 200 * 0.022 + 100 * 0.42) / 1e6)
    g = SimCluster(pools={"small": SMALL}, cost={"mode": "gpu_seconds", "usd_per_gpu_hour": 3.6}).cost_model
    assert isinstance(g, GpuSecondsCost)
    assert 0 < g.request_cost("small", 1000, 900, 100) < g.request_cost("small", 1000, 0, 100)
    assert g.request_cost("small", 1000, 0, 100) == pytest.approx(g.gpu_seconds("small", 1000, 0, 100) / 1000)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pools": {"small": {**SMALL, "replicas": 3}}}, r"cluster.pools.small: unknown keys \['replicas'\]"),
    ({"pools": {"small": {**SMALL, "cache": {"eviction": "fifo"}}}}, "cluster.pools.small.cache: cache eviction"),
    ({"pools": {"small": {**SMALL, "in_pool": {"policy": "round_robin"}}}}, "in_pool: expected a mapping with _target_"),
    ({"pools": {"small": {**SMALL, "in_pool": {"_target_": "rlroute.cluster.inpool.Best"}}}}, "in_pool._target_: cannot import"),
    ({"pools": {"small": {**SMALL, "in_pool": {"_target_": "rlroute.cluster.inpool.RoundRobin", "k": 2}}}},
     r"in_pool: bad parameters \['k'\] for RoundRobin"),
    ({"pools": {"small": {**SMALL, "instances": 0}}}, "instances must be >= 1"),
    ({"pools": {"small": SMALL}, "hybrid": {"mode": "relay"}}, "hybrid.mode must be one of"),
    ({"pools": {"small": SMALL}, "cost": {"mode": "flat"}}, "cost.mode must be"),
    ({"pools": {"small": SMALL}, "events": [{"time": 1.0}]}, "need 'time' and 'event'"),
    ({"pools": {"small": SMALL}, "events": [{"time": 1.0, "event": "explode"}]}, "unknown cluster event"),
    ({"pools": {"small": {**SMALL, "cache": {"mem_fraction_static": 1.5}}}}, "mem_fraction_static must be a number"),
    ({"pools": {"small": SMALL}, "fault_handling": {"detection": "never"}}, "fault_handling.detection must be"),
    ({"pools": {"small": SMALL}, "fault_handling": {"retry_budget": 3}}, r"fault_handling: unknown keys \['retry_budget'\]"),
    ({"pools": {"small": SMALL}, "fault_handling": {"health_check_interval_s": 0}}, "health_check_interval_s must be > 0"),
])
def test_bad_config_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimCluster(**kwargs)


def test_scheduled_events_from_config_run_at_their_time() -> None:
    cl = SimCluster(pools={"small": SMALL}, fault_handling={"detection": "instant"}, events=[{"time": 5.0, "event": "fail_instance", "pool": "small", "i": 1},
                                                   {"time": 9.0, "event": "recover_instance", "pool": "small", "i": 1}])
    assert set(EVENTS) >= {"fail_instance", "update_weights", "scale"}
    cl.advance(4.9)
    assert cl.state().pools["small"].instances[1].healthy
    cl.advance(5.0)
    assert not cl.state().pools["small"].instances[1].healthy
    cl.advance(9.0)
    assert cl.state().pools["small"].instances[1].healthy
    called: list[float] = []
    cl.schedule(12.0, lambda: called.append(cl.now))
    cl.advance(20.0)
    assert called == [12.0]


@pytest.mark.parametrize(("fields", "message"), [
    ({"input_len": 0}, "input_len must be >= 1"),
    ({"output_len": 0}, "output_len must be >= 1"),
    ({"block_size": 0, "blocks": (1, 2)}, "block_size must be >= 1"),
])
def test_bad_request_is_a_clear_error(fields: dict, message: str) -> None:
    cl = SimCluster(pools={"small": SMALL})
    req = Request(**{"id": 1, "arrival": 0.0, "input_len": 10, "output_len": 5, **fields})
    with pytest.raises(ValueError, match=message):
        cl.submit(req, Action.SMALL)


def test_action_for_a_missing_pool_is_a_clear_error() -> None:
    cl = SimCluster(pools={"small": SMALL})
    with pytest.raises(ValueError, match="needs pool 'large'"):
        cl.submit(Request(id=1, arrival=0.0, input_len=10, output_len=5), Action.HYBRID)


@pytest.mark.parametrize(("preset", "kind", "large_in"), [
    ("tokens", TokenPriceCost, 0.70), ("tokens_models_dev", TokenPriceCost, 0.287), ("gpu_seconds", GpuSecondsCost, None)])
def test_cost_model_is_a_config_group(preset: str, kind: type, large_in: float | None) -> None:
    cl = instantiate(cluster_cfg("cluster=default", f"cluster/cost={preset}"))
    assert isinstance(cl.cost_model, kind)
    if large_in is not None:
        assert cl.cost_model.request_cost("large", 10**6, 0, 0) == pytest.approx(large_in)
