"""``cluster=live``: the env's per-episode factory opens the live pools once, resets them per episode, closes them."""

from __future__ import annotations

from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "conf"


def _cfg(overrides: list[str]) -> object:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["cluster=live", "cluster.pools.small.instances=1",
                                            "cluster.speedup=200", "episode_length=12", *overrides])


def test_env_on_live_pools_reuses_and_closes_one_cluster() -> None:
    from rlroute.cluster.live import LiveCluster
    from rlroute.cluster.live.factory import close_live_clusters
    from rlroute.env import build_env

    cfg = _cfg([])
    env, env2 = build_env(cfg, split="test"), build_env(cfg, split="test")
    try:
        env.reset(seed=0)
        live = env.unwrapped.cluster
        assert isinstance(live, LiveCluster)
        assert len(live.pools["large"].instances) == 1 and len(live.pools["small"].instances) == 1
        done = []
        for _ in range(12):
            _, _, term, trunc, info = env.step(1)
            done += info["completions"]
            if term or trunc:
                break
        done += env.unwrapped.drain()
        assert done and all(not c.failed and c.e2e > 0 and 0 <= c.ttft <= c.e2e for c in done)
        env2.reset(seed=1)  # same config: the same live cluster, drained and reset, not a second one
        assert env2.unwrapped.cluster is live and live.in_flight == 0
        procs = [w.proc for w in live_fleet(cfg).workers]
    finally:
        close_live_clusters()
    assert all(p.poll() is not None for p in procs), "emulated workers must be stopped on close"


def live_fleet(cfg: object) -> object:
    from rlroute.cluster.live.factory import live_cluster_factory

    fleet = live_cluster_factory(cfg.cluster).fleet  # type: ignore[attr-defined]
    assert fleet is not None
    return fleet


@pytest.mark.parametrize("override,match", [
    ("cluster.pools.small.instances=0", "instances"),
    ("cluster.pools.small.instances=null", "instances"),
])
def test_live_pool_without_urls_or_instances_is_refused(override: str, match: str) -> None:
    from rlroute.cluster.live.factory import close_live_clusters
    from rlroute.env import build_env

    env = build_env(_cfg([override]), split="test")
    try:
        with pytest.raises(ValueError, match=match):
            env.reset(seed=0)
    finally:
        close_live_clusters()
