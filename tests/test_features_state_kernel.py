"""The system and cache blocks' compiled kernels (rlroute.features.state_kernel) equal their references bit
for bit: the raw values the Python reference below, the transformed block the schema's NumPy transform
(:class:`rlroute.features.schema.BlockTransform`).

The reference below is ``rlroute/features/state.py`` as it was before the kernel (commit ``16220a5``),
verbatim but for its names: the Python formulation the env and the router ran, used only here. The states
are random — pools missing, empty, all healthy, some unhealthy or paused, none available, zero KV
capacities, matches missing, non-finite latencies — and the ones a real env reaches under load.
"""

from __future__ import annotations

import math
import random
from operator import add, attrgetter, sub, truediv

import numpy as np
import pytest

from rlroute.cluster.base import ClusterState, InstanceState, PoolState
from rlroute.features.extract import FeatureExtractor
from rlroute.features.spec import POOL_CACHE, POOL_SYSTEM, SGLANG_CACHE_THRESHOLD
from rlroute.features.state import state_features, state_raw
from rlroute.types import POOLS

_DAY = 86400.0
_TWO_PI = 2.0 * math.pi
_NEVER = 1e12  # "since last weight update" for a pool never updated: saturates at the cap
_N_SYS = len(POOL_SYSTEM)
_N_CACHE = len(POOL_CACHE)
_KV_MEAN = [r[0] for r in POOL_SYSTEM].index("kv_usage_mean")
# Instance fields read per decision, in one attrgetter call per instance (row layout used below).
_ROW = attrgetter(
    "healthy", "paused", "queued", "running", "kv_used_tokens", "kv_capacity_tokens", "cache_tokens",
    "recent_ttft", "recent_tpot", "cache_hit_rate", "evictions_rate",
)  # fmt: skip


def _ref_pool_raw(
    pool: PoolState, match: list[int] | None, input_len: int, now: float
) -> tuple[list[float], list[float], float, float]:
    """Raw ``POOL_SYSTEM`` and ``POOL_CACHE`` values of one pool, plus (in_system, load) for the globals."""
    insts = pool.instances
    n = len(insts)
    if match is None:
        match = [0] * n
    elif len(match) != n:
        raise ValueError(
            f"prefix_match for pool {pool.name!r} has {len(match)} entries but the pool has {n} instances"
        )
    lwu = pool.last_weight_update
    since, updated = (_NEVER, 0.0) if lwu is None else (max(now - lwu, 0.0), 1.0)
    if not n:
        system = [0.0] * 12 + [256.0] + [0.0] * 4
        system += [pool.recent_ttft, 0.0, pool.recent_tpot, 0.0, pool.recent_e2e, pool.throughput,
                   pool.recent_output_tokens]
        system += [pool.slo_violation_rate, pool.cost_rate, since, updated]
        return system, [0.0] * _N_CACHE, 0.0, 0.0
    rows = list(map(_ROW, insts))  # one C-level pass over the dataclasses
    # Every row comes from the same attrgetter, so the columns have equal length (no strict= check).
    h_all, p_all, q_all, r_all, kvu_all, kvc_all, ct_all, tt_all, tp_all, hr_all, ev = zip(*rows)  # noqa: B905
    qs_all, rs_all = sum(q_all), sum(r_all)
    # Requests also sit on paused/unhealthy instances (held or being retried): count them in the pool load.
    in_pool = float(qs_all + rs_all)
    n_paused = sum(p_all)
    # Common case first (every instance healthy, none paused): the columns are used as they are, and
    # the per-element work runs in C through map() over operator functions.
    if all(h_all):
        nh, hm = n, match
        q, r, kvu, kvc, ct, tt, tp, hr = q_all, r_all, kvu_all, kvc_all, ct_all, tt_all, tp_all, hr_all
        qs, rs = qs_all, rs_all
    else:
        hrows = [row for row in rows if row[0]]
        hm = [m for m, row in zip(match, rows, strict=True) if row[0]]
        nh = len(hrows)
        if nh:
            _, _, q, r, kvu, kvc, ct, tt, tp, hr, _ = zip(*hrows, strict=True)
            qs, rs = sum(q), sum(r)
    if n_paused == 0:
        n_avail = nh
    else:
        apos = [i for i, row in enumerate(rows) if row[0] and not row[1]]
        n_avail = len(apos)
    load = in_pool / n_avail if n_avail else 256.0
    inv = 1.0 / max(input_len, 1)
    if nh:
        cap = kvc if 0 not in kvc else [c or 1 for c in kvc]
        kv = list(map(truediv, kvu, cap))
        util = list(map(truediv, ct, cap))
        best_m = max(hm)
        ib = hm.index(best_m)
        if n_avail:
            if n_paused == 0:
                al = list(map(add, q, r))
                am = hm
                kv_free = sum(map(sub, kvc, kvu))
                best_avail = best_m
            else:
                al = [q_all[i] + r_all[i] for i in apos]
                am = [match[i] for i in apos]
                kv_free = sum([kvc_all[i] - kvu_all[i] for i in apos])
                best_avail = max(am)
            ll_m = am[al.index(min(al))]
        else:
            best_avail = ll_m = 0
            kv_free = 0.0
        system = [
            n, nh / n, n_paused / n, 1.0 if n_avail else 0.0,
            qs / nh, max(q), min(q), rs / nh, max(r), min(r), qs, rs, load,
            sum(kv) / nh, max(kv), min(kv), kv_free,
            pool.recent_ttft, max(tt), pool.recent_tpot, max(tp),
            pool.recent_e2e, pool.throughput, pool.recent_output_tokens,
            pool.slo_violation_rate, pool.cost_rate, since, updated,
        ]  # fmt: skip
        cache = [
            best_m * inv, best_m, sum(hm) * inv / nh, best_avail * inv,
            1.0 if best_avail * inv > SGLANG_CACHE_THRESHOLD else 0.0,
            ll_m * inv, ll_m, q[ib] + r[ib],
            (nh - hm.count(0)) / nh, sum(util) / nh, max(util),
            pool.cache_hit_rate, max(hr), sum(ev), max(ev), sum(ct),
        ]  # fmt: skip
    else:
        system = [float(n), 0.0, n_paused / n, 0.0] + [0.0] * 8 + [load] + [0.0] * 4
        system += [pool.recent_ttft, 0.0, pool.recent_tpot, 0.0, pool.recent_e2e, pool.throughput,
                   pool.recent_output_tokens]
        system += [pool.slo_violation_rate, pool.cost_rate, since, updated]
        cache = [0.0] * _N_CACHE
    return system, cache, in_pool, (load if n_avail else 0.0)


def _ref_state_raw(state: ClusterState, matches: dict[str, list[int]], input_len: int) -> list[float]:
    """Raw values of the 64 system then 32 cache features, in schema order."""
    now = state.time
    system: list[float] = []
    cache: list[float] = []
    in_sys = [0.0, 0.0]
    loads = [0.0, 0.0]
    kvm = [0.0, 0.0]
    cost_rate = 0.0
    for k, name in enumerate(POOLS):
        pool = state.pools.get(name)
        if pool is None:
            system += [0.0] * _N_SYS
            cache += [0.0] * _N_CACHE
            continue
        s, c, in_sys[k], loads[k] = _ref_pool_raw(pool, matches.get(name), input_len, now)
        system += s
        cache += c
        kvm[k] = s[_KV_MEAN]
        cost_rate += pool.cost_rate
    total = in_sys[0] + in_sys[1]
    phase = _TWO_PI * ((state.day_offset + now) % _DAY) / _DAY
    system += [
        state.arrival_rate,
        math.sin(phase),
        math.cos(phase),
        total,
        in_sys[0] / total if total > 0 else 0.0,
        cost_rate,
        kvm[0] - kvm[1],
        (loads[0] - loads[1]) / (loads[0] + loads[1] + 1.0),
    ]
    system += cache
    return system


def _instance(rng: random.Random, i: int) -> InstanceState:
    cap = rng.choice([0, 1, 1000, 250_000, 2**20])
    return InstanceState(
        index=i, healthy=rng.random() > 0.2, paused=rng.random() < 0.15, queued=rng.choice([0, 0, 1, 7, 300]),
        running=rng.choice([0, 3, 64]), kv_used_tokens=rng.randint(0, max(cap, 1)), kv_capacity_tokens=cap,
        cache_tokens=rng.randint(0, 10**6), recent_ttft=rng.choice([0.0, rng.random() * 9, math.inf]),
        recent_tpot=rng.random() / 7, cache_hit_rate=rng.random(), evictions_rate=rng.choice([0.0, rng.random() * 1e4]),
    )


def _state(rng: random.Random) -> tuple[ClusterState, dict[str, list[int]], int]:
    pools: dict[str, PoolState] = {}
    matches: dict[str, list[int]] = {}
    for name in POOLS:
        if rng.random() < 0.05:
            continue  # a missing pool
        n = rng.choice([0, 1, 2, 3, 4, 8, 11])
        insts = [_instance(rng, i) for i in range(n)]
        if rng.random() < 0.3:
            for x in insts:
                x.healthy, x.paused = True, False
        pools[name] = PoolState(name=name, instances=insts, recent_ttft=rng.random() * 3,
                                recent_tpot=rng.random() / 10, recent_e2e=rng.random() * 60,
                                throughput=rng.random() * 5e3, cache_hit_rate=rng.random(),
                                slo_violation_rate=rng.random(), cost_rate=rng.random(),
                                recent_output_tokens=rng.random() * 2e3,
                                last_weight_update=rng.choice([None, 5.0, 1e9]))
        if rng.random() < 0.9:
            matches[name] = [rng.choice([0, 0, 64, 128, 4096, rng.randint(0, 9000)]) for _ in range(n)]
    state = ClusterState(time=rng.random() * 1e5, pools=pools, arrival_rate=rng.random() * 50,
                         day_offset=rng.choice([0.0, 43_200.0]))
    return state, matches, rng.choice([0, 1, 420, 9000])


def _same(state: ClusterState, matches: dict[str, list[int]], input_len: int) -> None:
    want = np.array(_ref_state_raw(state, matches, input_len), dtype=np.float64)
    got = state_raw(state, matches, input_len)
    assert got.tobytes() == want.tobytes(), np.flatnonzero(got.view(np.int64) != want.view(np.int64))


def test_random_states_bit_identical() -> None:
    rng = random.Random(3)
    for _ in range(3000):
        _same(*_state(rng))


def test_transformed_blocks_bit_identical() -> None:
    """The observation's system + cache slice equals the NumPy transform of the raw values, also for values a
    misreporting live source could give (NaN, -0.0, negative, infinite pool statistics)."""
    ex = FeatureExtractor("hash")
    tf = ex.schema.transformer("system", "cache")
    rng = random.Random(5)
    odd = [math.nan, -0.0, 0.0, -5.0, math.inf, -math.inf, 1e300]
    fields = ("recent_ttft", "recent_tpot", "recent_e2e", "throughput", "slo_violation_rate", "cost_rate",
              "cache_hit_rate", "recent_output_tokens")
    for i in range(3000):
        state, matches, input_len = _state(rng)
        if i % 2:
            for pool in state.pools.values():
                for f in rng.sample(fields, 3):
                    setattr(pool, f, rng.choice(odd))
            state.arrival_rate = rng.choice(odd)
        want = np.empty(tf.size, dtype=np.float32)
        tf(state_raw(state, matches, input_len), want)
        got = np.empty(tf.size, dtype=np.float32)
        state_features(state, matches, input_len, tf, got)
        assert got.tobytes() == want.tobytes(), np.flatnonzero(got.view(np.int32) != want.view(np.int32))


def test_env_states_bit_identical() -> None:
    """States a loaded simulated cluster reaches (the bench's decision contexts)."""
    from hydra import compose, initialize_config_dir

    from rlroute.bench.decision import _contexts
    from rlroute.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config")
    for ctx in _contexts(cfg, 50, 100, 0):
        _same(ctx.state, ctx.matches, ctx.request.input_len)


def test_mismatched_matches_name_the_pool() -> None:
    state, _, _ = _state(random.Random(0))
    name = next(n for n, p in state.pools.items() if p.instances)
    with pytest.raises(ValueError, match=name):
        state_raw(state, {name: [0] * (len(state.pools[name].instances) + 1)}, 10)


def test_a_non_numeric_state_field_is_named() -> None:
    state, matches, _ = _state(random.Random(1))
    pool = next(p for p in state.pools.values() if p.instances)
    pool.instances[0].recent_ttft = None  # type: ignore[assignment]
    with pytest.raises(ValueError, match="instance.recent_ttft.*None"):
        state_raw(state, matches, 10)
