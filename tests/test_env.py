"""RoutingEnv against the real simulator, workloads and quality models composed from conf/."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from rlroute.env import ENV_ID, RewardConfig, RoutingEnv, build_env, default_config
from rlroute.features import SCHEMA, extract
from rlroute.types import Action

CONF = Path(__file__).resolve().parents[1] / "conf"
WORKLOADS = sorted(p.stem for p in (CONF / "workload").glob("*.yaml"))
SHARED_DATA = Path(os.environ.get("RLROUTE_SHARED_DATA", CONF.parents[1] / "shared" / "data"))


def fresh(*overrides: str, split: str = "train", **kw: object) -> RoutingEnv:
    cfg = default_config(["episode_length=64", *overrides])
    return build_env(cfg, split=split, **kw)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=8)
def _cached(overrides: tuple[str, ...]) -> RoutingEnv:
    return fresh(*overrides)


def make(*overrides: str, **kw: object) -> RoutingEnv:
    """An env for ``overrides``, shared between tests (building fits the quality model: ~2 s). Every
    test resets it, and reset rebuilds cluster and stream, so sharing leaks no state."""
    return fresh(*overrides, **kw) if kw else _cached(tuple(overrides))


def in_bounds(obs: np.ndarray) -> bool:
    return bool(np.isfinite(obs).all() and ((obs >= SCHEMA.low) & (obs <= SCHEMA.high)).all())


def rollout(env: RoutingEnv, seed: int, policy: object = "random", steps: int | None = None) -> list[tuple]:
    """Run one episode; returns (obs, reward, info-summary) per step."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps or env.episode_length):
        a = int(rng.integers(0, 3)) if policy == "random" else policy(env)  # type: ignore[operator]
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, info))
        assert not term
        if trunc:
            break
    return out


def test_gymnasium_check_env() -> None:
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render.*")
        check_env(make())


def test_sb3_check_env() -> None:
    from stable_baselines3.common.env_checker import check_env

    check_env(make(), warn=True)


def test_make_with_defaults() -> None:
    env = gymnasium.make(ENV_ID)
    obs, info = env.reset(seed=0)
    assert obs.shape == (224,) and obs.dtype == np.float32 and in_bounds(obs)
    obs, r, term, trunc, info = env.step(1)
    assert isinstance(r, float) and in_bounds(obs)
    assert env.unwrapped.episode_length == default_config().episode_length
    env.close()


def test_make_with_overrides() -> None:
    env = gymnasium.make(ENV_ID, overrides=["episode_length=3", "reward=cost_sensitive"])
    env.reset(seed=1)
    truncs = [env.step(0)[3] for _ in range(3)]
    assert truncs == [False, False, True]
    assert (
        env.unwrapped.reward_cfg.cost_weight
        == RewardConfig.from_mapping(dict(default_config(["reward=cost_sensitive"]).reward)).cost_weight
    )


@pytest.mark.parametrize("workload", WORKLOADS)
def test_obs_in_bounds_on_every_workload(workload: str) -> None:
    if workload == "replay":
        pytest.skip("workload=replay needs a decision log (workload.path): tested in tests/test_replay_twin.py")
    try:
        env = make(f"workload={workload}", "episode_length=48")
        env.reset(seed=0)
    except Exception as exc:  # a data workload without ../shared/data: skip, naming why
        if not SHARED_DATA.is_dir() and "data" in str(exc).lower():
            pytest.skip(f"workload {workload} needs ../shared/data ({SHARED_DATA}): {exc}")
        raise
    for obs, _, info in rollout(env, seed=3):
        assert in_bounds(obs), workload
        assert np.isfinite(info["cost"]) and info["cost"] >= 0


def test_idle_and_overloaded_cluster() -> None:
    env = make(
        "cluster.pools.large.instances=1",
        "cluster.pools.small.instances=1",
        "workload.rate=100",
        "episode_length=400",
    )
    obs, _ = env.reset(seed=0)
    assert in_bounds(obs)
    q = SCHEMA.index["system.large.queued_total"]
    assert obs[q] == 0.0  # idle: nothing queued at the first arrival
    steps = rollout(env, seed=0, policy=lambda e: int(Action.LARGE))
    assert all(in_bounds(o) for o, _, _ in steps)
    last_obs, _, last_info = steps[-1]
    assert steps[-2][2]["in_system"] > 100  # one large instance cannot keep up with 100 req/s
    assert last_info["in_system"] == 0  # truncation drained them
    assert last_obs[q] > 0.3  # so requests queue (the final observation is taken before the drain)
    # a full batch: the TP4 instance's 216k KV tokens hold ~150 of these requests (log scale to 256: 0.90)
    assert last_obs[SCHEMA.index["system.large.running_mean"]] > 0.85
    assert sum(i["latency"] for _, _, i in steps) > 0


def test_same_seed_same_episode() -> None:
    a, b = rollout(make(), seed=11), rollout(fresh(), seed=11)  # two independent instances
    assert len(a) == len(b)
    for (oa, ra, ia), (ob, rb, ib) in zip(a, b, strict=True):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb and ia["request_id"] == ib["request_id"]
        assert ia["completions"] == ib["completions"]
    c = rollout(make(), seed=12)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=False))


def test_request_credit_sums_to_own_rewards_of_a_drained_episode() -> None:
    env = make("episode_length=96")
    steps = rollout(env, seed=5)
    done = [c for _, _, i in steps for c in i["completions"]]
    assert env.drain() == []  # truncation already drained the cluster
    assert len(done) == len(steps)  # every decision completes exactly once, inside the episode
    assert len({c.request_id for c in done}) == len(steps)
    rc = env.reward_cfg
    by_id = {i["request_id"]: i for _, _, i in steps}
    own = {c.request_id: rc.request_reward(0.0 if c.failed else by_id[c.request_id]["quality"], c.cost, c)
           for c in done}
    assert sum(r for _, r, _ in steps) == pytest.approx(sum(own.values()), rel=1e-9)
    credits = [cr for _, _, i in steps for cr in i["credits"]]
    assert sorted(cr.request_id for cr in credits) == sorted(own)
    for cr in credits:  # each credit names its own decision's step and carries its own reward
        assert steps[cr.step][2]["request_id"] == cr.request_id
        assert cr.reward == pytest.approx(own[cr.request_id])
    for _, r, i in steps:
        assert r == pytest.approx(sum(i["reward_terms"].values()))
        assert r == pytest.approx(sum(cr.reward for cr in i["credits"]))
        assert i["slo_violations"] == sum(rc.violates(c) for c in i["completions"])
        assert i["quality"] == pytest.approx(i["quality_p"])


def test_park_credit_latency_integral_is_total_time_in_system() -> None:
    env = make("episode_length=96", "reward.credit=park")
    steps = rollout(env, seed=5)
    done = [c for _, _, i in steps for c in i["completions"]]
    assert len(done) == len(steps)
    # The step integrals sum to the time requests spent in the system (drained: nothing cut off).
    expected = sum(c.finish - c.arrival for c in done)
    assert sum(i["latency"] for _, _, i in steps) == pytest.approx(expected, rel=1e-6)
    rc = env.reward_cfg
    for _, r, i in steps:  # a step pays its own decision's quality and cost, and everyone's latency
        assert i["reward_terms"]["quality"] == pytest.approx(rc.quality_weight * i["quality"])
        assert i["reward_terms"]["cost"] == pytest.approx(-rc.cost_weight * i["cost"])
        assert r == pytest.approx(sum(i["reward_terms"].values()))


def test_quality_signal_ok_is_binary() -> None:
    env = make("reward.quality=ok")
    for _, _, info in rollout(env, seed=2, steps=32):
        assert info["quality"] in (0.0, 1.0) and info["quality"] == float(info["quality_ok"])


def test_masks_and_decision_context() -> None:
    env = make()
    obs, _ = env.reset(seed=0)
    ctx = env.decision_context()
    np.testing.assert_array_equal(ctx.obs, obs)
    # The same public function on the same typed inputs gives the env's observation (sim/live parity).
    np.testing.assert_array_equal(extract(ctx.request, ctx.state, ctx.matches), obs)
    assert ctx.mask is not None and ctx.mask.all() and env.action_masks().all()
    assert set(ctx.matches) == {"large", "small"}
    env.cluster.pause("large")  # type: ignore[union-attr]
    obs, _, _, _, info = env.step(int(Action.SMALL))
    assert env.action_masks().tolist() == [False, True, False]
    assert obs[SCHEMA.index["system.large.available"]] == 0.0
    _, _, _, _, info = env.step(int(Action.LARGE))
    assert info["action_valid"] is False


def test_episodes_start_at_different_offsets() -> None:
    env = make()
    starts = {env.reset(seed=s)[1]["offset"] for s in range(6)}
    assert len(starts) > 1


def test_bad_reward_config_is_named() -> None:
    with pytest.raises(ValueError, match="unknown reward config key"):
        RewardConfig.from_mapping({"cost_weigth": 1.0})
    with pytest.raises(ValueError, match="reward.quality"):
        RewardConfig.from_mapping({"quality": "maybe"})
    with pytest.raises(ValueError, match="reward.credit"):
        RewardConfig.from_mapping({"credit": "later"})


def test_default_reward_has_a_real_tradeoff() -> None:
    """Neither all-large nor all-small maximises the default reward: routing by the request beats both."""
    env = make("episode_length=512")

    def ret(policy: object) -> float:
        return sum(r for _, r, _ in rollout(env, seed=0, policy=policy))

    def by_gain(e: RoutingEnv) -> int:
        p = e.decision_context().request.quality.p  # type: ignore[union-attr]
        return int(Action.LARGE if p[0] - p[1] > 0.15 else Action.SMALL)

    large, small = ret(lambda e: int(Action.LARGE)), ret(lambda e: int(Action.SMALL))
    assert ret(by_gain) > max(large, small) + 5.0


def test_short_stream_truncates_and_refuses_more_steps() -> None:
    env = make("workload.max_requests=5", "episode_length=50", max_offset=0)
    env.reset(seed=0)
    steps = [env.step(1) for _ in range(5)]
    assert [s[3] for s in steps] == [False, False, False, False, True]  # 5 requests, 5 decisions
    assert in_bounds(steps[-1][0])
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be 0"):
        env.step(7)


def test_build_env_is_seeded_from_config() -> None:
    a, b = fresh("seed=3"), fresh("seed=3")
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])  # no seed passed: cfg.seed decides


def test_calibrate_prints_rule_table(capsys: pytest.CaptureFixture[str]) -> None:
    from rlroute.env import calibrate

    assert calibrate.main(["--seeds", "0", "--episode-length", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines[2:]] == list(calibrate.RULES)


def test_warmup_fills_the_pools_and_pays_only_decisions() -> None:
    """``env.warmup``: the seed heuristic routes up to N requests before the first decision; the episode's
    pools are then warm, and the warm-up requests are neither decisions nor paid (their completions are
    dropped), so the return is still the sum of the decided requests' own rewards."""
    cold, warm = make("episode_length=48"), make("episode_length=48", warmup=200)
    drawn = [warm.reset(seed=s)[1]["warmup"] for s in range(20)]
    assert all(0 <= w <= 200 for w in drawn) and 0 in drawn and max(drawn) > 0  # some cold, some warm
    n = next(s for s in range(3, 40) if warm.reset(seed=s)[1]["warmup"] >= 100)  # a seed with a long warm-up
    state = warm.decision_context().state
    cache = sum(i.cache_tokens for p in state.pools.values() for i in p.instances)
    assert cache > 0 and any(p.throughput > 0 for p in state.pools.values())
    cold.reset(seed=n)
    assert sum(i.cache_tokens for p in cold.decision_context().state.pools.values() for i in p.instances) == 0
    steps = rollout(warm, seed=n)
    decided = {i["request_id"] for _, _, i in steps}
    done = [c for _, _, i in steps for c in i["completions"]]
    assert {c.request_id for c in done} == decided and len(done) == len(decided)
    rc = warm.reward_cfg
    own = sum(rc.request_reward(0.0 if c.failed else next(i for _, _, i in steps if i["request_id"] == c.request_id)
                                ["quality"], c.cost, c) for c in done)
    assert sum(r for _, r, _ in steps) == pytest.approx(own, rel=1e-9)
    with pytest.raises(ValueError, match="warmup"):
        make(warmup=-1)
