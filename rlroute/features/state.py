"""The system (64) and cache (32) blocks, read from the typed :class:`ClusterState` only.

This runs once per routing decision, so it gathers raw numbers into flat Python lists in one pass per
pool (list literals, comprehensions and the ``sum``/``max``/``min`` builtins are the cheapest way to read
dataclass attributes) and transforms both blocks with one vectorised call. Order must match ``POOL_SYSTEM``, ``GLOBAL_SYSTEM`` and
``POOL_CACHE`` in :mod:`rlroute.features.spec`.

Conventions: statistics "over healthy instances" are 0 when a pool has none; an instance's KV usage is
``kv_used_tokens / kv_capacity_tokens``; prefix matches are aligned with ``pool.instances`` by position.
"""

from __future__ import annotations

import math

from rlroute.cluster.base import ClusterState, PoolState
from rlroute.features.spec import POOL_CACHE, POOL_SYSTEM, SGLANG_CACHE_THRESHOLD
from rlroute.types import POOLS

_DAY = 86400.0
_TWO_PI = 2.0 * math.pi
_NEVER = 1e12  # "since last weight update" for a pool never updated: saturates at the cap
_N_SYS = len(POOL_SYSTEM)
_N_CACHE = len(POOL_CACHE)
_KV_MEAN = [r[0] for r in POOL_SYSTEM].index("kv_usage_mean")


def _pool_raw(
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
    hp = [(m, i) for m, i in zip(match, insts, strict=True) if i.healthy]
    healthy = [i for _, i in hp]
    nh = len(healthy)
    avail = [p for p in hp if not p[1].paused]
    n_avail = len(avail)
    n_paused = sum([i.paused for i in insts])
    # Requests also sit on paused/unhealthy instances (held or being retried): count them in the pool load.
    in_pool = float(sum([i.queued + i.running for i in insts]))
    load = in_pool / n_avail if n_avail else 256.0
    since = max(now - pool.last_weight_update, 0.0) if pool.last_weight_update is not None else _NEVER
    inv = 1.0 / max(input_len, 1)
    if nh:
        q = [i.queued for i in healthy]
        r = [i.running for i in healthy]
        cap = [i.kv_capacity_tokens or 1 for i in healthy]
        kv = [i.kv_used_tokens / c for i, c in zip(healthy, cap, strict=True)]
        util = [i.cache_tokens / c for i, c in zip(healthy, cap, strict=True)]
        hm = [m for m, _ in hp]
        qs, rs = sum(q), sum(r)
        best_m = max(hm)
        best_i = healthy[hm.index(best_m)]
        if avail:
            am = [m for m, _ in avail]
            al = [i.queued + i.running for _, i in avail]
            best_avail = max(am)
            ll_m = am[al.index(min(al))]
            kv_free = float(sum([i.kv_capacity_tokens - i.kv_used_tokens for _, i in avail]))
        else:
            best_avail = ll_m = 0
            kv_free = 0.0
        ev = [i.evictions_rate for i in insts]
        system = [
            float(n), nh / n, n_paused / n, 1.0 if n_avail else 0.0,
            qs / nh, max(q), min(q), rs / nh, max(r), min(r), float(qs), float(rs), load,
            sum(kv) / nh, max(kv), min(kv), kv_free,
            pool.recent_ttft, max([i.recent_ttft for i in healthy]),
            pool.recent_tpot, max([i.recent_tpot for i in healthy]),
            pool.recent_e2e, pool.throughput, pool.throughput / nh,
            pool.slo_violation_rate, pool.cost_rate, since, 0.0 if pool.last_weight_update is None else 1.0,
        ]  # fmt: skip
        cache = [
            best_m * inv, float(best_m), sum(hm) * inv / nh, best_avail * inv,
            1.0 if best_avail * inv > SGLANG_CACHE_THRESHOLD else 0.0,
            ll_m * inv, float(ll_m), float(best_i.queued + best_i.running),
            sum([m > 0 for m in hm]) / nh, sum(util) / nh, max(util),
            pool.cache_hit_rate, max([i.cache_hit_rate for i in healthy]),
            float(sum(ev)), float(max(ev)), float(sum([i.cache_tokens for i in healthy])),
        ]  # fmt: skip
    else:
        system = [float(n), 0.0, n_paused / n if n else 0.0, 0.0] + [0.0] * 8 + [load] + [0.0] * 4
        system += [pool.recent_ttft, 0.0, pool.recent_tpot, 0.0, pool.recent_e2e, pool.throughput, 0.0]
        system += [
            pool.slo_violation_rate,
            pool.cost_rate,
            since,
            0.0 if pool.last_weight_update is None else 1.0,
        ]
        cache = [0.0] * 16
    return system, cache, in_pool, (load if n_avail else 0.0)


def state_raw(state: ClusterState, matches: dict[str, list[int]], input_len: int) -> list[float]:
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
        s, c, in_sys[k], loads[k] = _pool_raw(pool, matches.get(name), input_len, now)
        system += s
        cache += c
        kvm[k] = s[_KV_MEAN]
        cost_rate += pool.cost_rate
    total = in_sys[0] + in_sys[1]
    phase = _TWO_PI * (now % _DAY) / _DAY
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
    return system + cache
