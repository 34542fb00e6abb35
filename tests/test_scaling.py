"""Scalers (rlroute/scaling): the reactive rule, the forecasters, the predictive lead, and the simulator driver
(scale events, start-up delay, GPU-seconds, cache warm-up, conservation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlroute.cluster.sim import SimCluster
from rlroute.scaling.base import PoolLimits, PoolSignal, Signals, build_scaler, hpa_desired
from rlroute.scaling.forecast import HoltWinters, SeasonalNaive, accuracy, poisson_floor
from rlroute.scaling.predictive import PredictiveScaler
from rlroute.scaling.reactive import ReactiveScaler, StaticScaler
from rlroute.scaling.sim import SimAutoscaler
from rlroute.types import Action, Request

LIM = {"min_instances": 1, "max_instances": 6, "startup_s": 0.0, "warmup_s": 0.0, "target_load": 10.0,
       "capacity_rps": 5.0}


def sig(t: float, ready: int, load: int, queued: int = 0, starting: int = 0, arrivals: int = 0) -> Signals:
    return Signals(t, {"small": PoolSignal(ready, starting, load, queued, 1.0)}, arrivals, 30.0)


def test_limits_validate_and_name_the_key() -> None:
    with pytest.raises(ValueError, match="max_instances"):
        PoolLimits.from_config({"min_instances": 1}, "scaler.pools.small")
    with pytest.raises(ValueError, match=r"unknown keys \['max'\]"):
        PoolLimits.from_config({"max_instances": 2, "max": 3}, "scaler.pools.small")
    with pytest.raises(ValueError, match="max_instances .* must be >= min_instances"):
        PoolLimits(min_instances=3, max_instances=2)
    with pytest.raises(ValueError, match="startup_s must be >= 0"):
        PoolLimits(max_instances=2, startup_s=-1)
    assert PoolLimits(max_instances=4, startup_s=30, warmup_s=10).lead_s == 40


def test_hpa_rule_and_tolerance() -> None:
    assert hpa_desired(2, 20.0, 10.0, 0.1) == 4
    assert hpa_desired(2, 10.5, 10.0, 0.1) == 2  # inside the band
    assert hpa_desired(4, 4.0, 10.0, 0.1) == 2


def test_reactive_scales_up_with_cooldown_and_down_one_at_a_time() -> None:
    s = ReactiveScaler({"small": LIM}, up_cooldown_s=60.0, down_cooldown_s=300.0)
    assert s.recommend(sig(0.0, 2, 40)) == {"small": 4}  # 20 per instance vs target 10
    assert s.recommend(sig(30.0, 4, 80)) == {"small": 4}  # up cooldown
    assert s.recommend(sig(60.0, 4, 80)) == {"small": 6}  # capped at max_instances
    assert s.recommend(sig(90.0, 6, 6)) == {"small": 6}  # down waits 300 s after the change
    assert s.recommend(sig(360.0, 6, 6)) == {"small": 5}  # then one at a time
    assert s.recommend(sig(390.0, 5, 5)) == {"small": 5}
    assert s.recommend(sig(660.0, 5, 50)) == {"small": 5}  # 10 per instance: inside the hysteresis band


def test_reactive_queue_trigger_min_and_no_down_while_starting() -> None:
    s = ReactiveScaler({"small": LIM}, queue_per_instance=1.0)
    assert s.recommend(sig(0.0, 2, 20, queued=5)) == {"small": 3}  # on target, but queueing
    s.reset()
    assert s.recommend(sig(0.0, 2, 0, starting=1)) == {"small": 3}  # never removes while one starts
    assert s.recommend(sig(0.0, 1, 0)) == {"small": 1}  # min_instances


def test_reactive_down_cooldown_counts_from_readiness() -> None:
    """An instance that starts for longer than the down window is not removed the tick it becomes ready."""
    s = ReactiveScaler({"small": LIM}, down_cooldown_s=300.0)
    assert s.recommend(sig(0.0, 1, 30)) == {"small": 3}
    assert s.recommend(sig(330.0, 1, 2, starting=2)) == {"small": 3}  # still starting: no scale-down
    assert s.recommend(sig(360.0, 3, 3)) == {"small": 3}  # ready now; the window starts at 330 s
    assert s.recommend(sig(630.0, 3, 3)) == {"small": 2}


def test_static_holds_max() -> None:
    assert StaticScaler({"small": LIM}).recommend(sig(0.0, 1, 0)) == {"small": 6}


def test_poisson_floor_matches_the_normal_approximation() -> None:
    fl = poisson_floor([100.0], 1.0)
    assert fl["mape"] == pytest.approx(math.sqrt(2 / (math.pi * 100)), rel=0.03)
    assert 0.65 < fl["within_10pct"] < 0.75  # P(|N - 100| <= 10), N ~ Poisson(100): ~0.71
    acc = accuracy([110.0, 90.0, 100.0], [100.0, 100.0, 0.0])
    assert acc == {"mape": pytest.approx(0.1), "within_10pct": 1.0, "buckets": 2}


def seasonal_counts(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n)
    return rng.poisson(600 * (1 + 0.6 * np.sin(2 * np.pi * t / m))).astype(float)


def test_holt_winters_beats_seasonal_naive_on_a_seasonal_series() -> None:
    rng = np.random.default_rng(0)
    m, h = 24, 6
    y = seasonal_counts(3 * m + h, m, rng)
    hw, sn = HoltWinters(30.0, 30.0 * m), SeasonalNaive(30.0, 30.0 * m)
    for v in y[:3 * m]:
        hw.observe(v)
        sn.observe(v)
    truth = 600 * (1 + 0.6 * np.sin(2 * np.pi * np.arange(3 * m, 3 * m + h) / m)) / 30.0
    e_hw = accuracy(hw.predict(h), truth)["mape"]
    e_sn = accuracy(sn.predict(h), truth)["mape"]
    assert e_hw < 0.08 and e_hw < e_sn
    assert SeasonalNaive(30.0, 30.0 * m).predict(2).tolist() == [0.0, 0.0]


def test_predictive_scales_ahead_of_a_rising_load() -> None:
    """With two seasons of history, the scaler asks for capacity one lead time before the load needs it,
    while the reactive rule (on the same signals) waits for the load."""
    m = 24
    lim = {**LIM, "max_instances": 20, "startup_s": 120.0, "warmup_s": 60.0}
    p = PredictiveScaler({"small": lim}, forecast={"method": "holt_winters", "season_s": 30.0 * m},
                         reactive_floor=False, headroom=0.0)
    y = seasonal_counts(3 * m, m, np.random.default_rng(1))
    out = []
    for k, v in enumerate(y):
        out.append(p.recommend(sig(30.0 * k, 4, 40, arrivals=int(v)))["small"])
    # the load's minimum is at 3/4 of the season; ~7 ticks (the 180 s lead = 6 ticks + 1) before the next
    # rise past the mean the recommendation already reflects the higher rate
    k_min = 2 * m + (3 * m) // 4
    rate_now = 600 * (1 + 0.6 * math.sin(2 * math.pi * k_min / m)) / 30.0
    assert out[k_min] > math.ceil(rate_now / lim["capacity_rps"])
    assert p.forecast() is not None and p.last_horizon_s == 30.0 * 7


def small_cluster(n: int = 2) -> SimCluster:
    return SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": n,
                                       "in_pool": {"_target_": "rlroute.cluster.inpool.RoundRobin"}}})


def stream(n: int, rate: float, seed: int = 0) -> list[Request]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    sys_blocks = tuple(range(1000, 1016))
    return [Request(id=k, arrival=float(t[k]), input_len=1500, output_len=int(rng.integers(50, 400)),
                    blocks=sys_blocks + (10**6 + 2 * k, 10**6 + 2 * k + 1), block_size=64) for k in range(n)]


def test_sim_autoscaler_scales_bills_and_conserves() -> None:
    cl = small_cluster(1)
    lim = {**LIM, "max_instances": 4, "startup_s": 40.0, "warmup_s": 20.0, "target_load": 4.0}
    auto = SimAutoscaler(cl, ReactiveScaler({"small": lim}, interval_s=10.0, up_cooldown_s=0.0))
    reqs = stream(3000, 25.0)
    out = []
    up_at = None
    for r in reqs:
        out += cl.advance(r.arrival)
        cl.submit(r, Action.SMALL)
        if up_at is None and auto.scale_events:
            up_at = auto.scale_events[0][0]
            new = cl.pools["small"].instances[-1]
            assert not new.healthy  # starting
        if up_at is not None and cl.now > up_at + 61.0:
            assert all(i.healthy for i in cl.pools["small"].instances[:2])
    out += cl.drain()
    assert len(out) == len(reqs) and not any(c.failed for c in out)
    assert up_at is not None and max(n for _, _, _, n in auto.scale_events) > 1
    # GPU-seconds: the integral of the instance count the ticks recorded (1 GPU each)
    rows = [r for r in auto.timeline if r["pool"] == "small"]
    want, prev_t, prev_n = 0.0, 0.0, 1
    for r in rows:
        want += prev_n * (r["time"] - prev_t)
        prev_t, prev_n = r["time"], r["instances"]
    assert auto.gpu_s["small"] == pytest.approx(want)
    assert auto.summary()["gpu_hours_total"] == pytest.approx(want / 3600)


def test_static_scaler_bills_instances_times_gpus_times_time() -> None:
    cl = SimCluster(pools={"large": {"profile": "qwen3-235b-a22b-fp8__h100x4", "instances": 2}})
    auto = SimAutoscaler(cl, StaticScaler({"large": {**LIM, "max_instances": 2}}, interval_s=10.0))
    cl.advance(100.0)
    assert auto.gpu_s["large"] == pytest.approx(2 * 4 * 100.0)


def test_cache_warmup_replays_hot_prefixes_into_a_new_instance() -> None:
    def run(warm: bool) -> tuple[SimCluster, SimAutoscaler]:
        cl = small_cluster(1)
        lim = {**LIM, "max_instances": 2, "startup_s": 30.0, "warmup_s": 10.0, "target_load": 1.0}
        auto = SimAutoscaler(cl, ReactiveScaler({"small": lim}, interval_s=10.0), {"enabled": warm})
        for r in stream(1000, 10.0, seed=2):
            cl.advance(r.arrival)
            cl.submit(r, Action.SMALL)
        cl.drain()
        return cl, auto

    cold, a_cold = run(False)
    warm, a_warm = run(True)
    assert a_warm.warmed_tokens["small"] >= 16 * 64 and a_cold.warmed_tokens["small"] == 0
    hit = [p.instances[1].cache.hit_tokens for p in (cold.pools["small"], warm.pools["small"])]
    assert hit[1] > hit[0]


def test_scaler_configs_build_and_reject_unknown_pools() -> None:
    from hydra import compose, initialize_config_dir

    from rlroute.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert build_scaler(compose("config").scaler) is None  # default: none
        for name, cls in (("static", StaticScaler), ("reactive", ReactiveScaler), ("predictive", PredictiveScaler)):
            cfg = compose("config", overrides=[f"scaler={name}"])
            s = build_scaler(cfg.scaler)
            assert type(s) is cls and set(s.limits) == {"large", "small"}
    with pytest.raises(ValueError, match="scaler.pools.large: the cluster has no such pool"):
        SimAutoscaler(small_cluster(), ReactiveScaler({"large": LIM}))
    with pytest.raises(ValueError, match="season_s is missing"):
        PredictiveScaler({"small": LIM}, forecast={"method": "holt_winters"})


def test_env_and_sim_run_with_a_scaler() -> None:
    from rlroute.env.build import build_env, default_config
    from rlroute.scaling.sim import ScaledClusterFactory

    cfg = default_config(["scaler=reactive", "scaler.interval_s=1.0", "episode_length=64"])
    env = build_env(cfg)
    assert isinstance(env.cluster_factory, ScaledClusterFactory)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(1)
        done = term or trunc
    assert env.cluster_factory.last is not None and env.cluster_factory.last.timeline
    plain = build_env(default_config(["episode_length=8"]))
    assert not isinstance(plain.cluster_factory, ScaledClusterFactory)


def test_the_default_predictive_config_builds_with_either_forecaster() -> None:
    """conf/scaler/predictive.yaml carries ``refit_s: null``; with ``method=seasonal_naive`` that default is
    accepted (it once raised TypeError), a set ``refit_s`` is refused naming the key, as is an unknown option."""
    from rlroute.scaling.forecast import build_forecaster

    for method in ("holt_winters", "seasonal_naive"):
        p = PredictiveScaler({"small": LIM}, forecast={"method": method, "season_s": 720.0, "refit_s": None})
        assert type(p.forecaster).__name__ == {"holt_winters": "HoltWinters", "seasonal_naive": "SeasonalNaive"}[method]
    with pytest.raises(ValueError, match="refit_s applies to holt_winters only"):
        build_forecaster("seasonal_naive", 30.0, 720.0, refit_s=60.0)
    with pytest.raises(ValueError, match="unknown option"):
        build_forecaster("holt_winters", 30.0, 720.0, smoothing=0.5)
