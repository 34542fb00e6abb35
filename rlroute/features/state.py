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
from operator import add, attrgetter, sub, truediv

from rlroute.cluster.base import ClusterState, PoolState
from rlroute.features.spec import POOL_CACHE, POOL_SYSTEM, SGLANG_CACHE_THRESHOLD
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
    lwu = pool.last_weight_update
    since, updated = (_NEVER, 0.0) if lwu is None else (max(now - lwu, 0.0), 1.0)
    if not n:
        system = [0.0] * 12 + [256.0] + [0.0] * 4
        system += [pool.recent_ttft, 0.0, pool.recent_tpot, 0.0, pool.recent_e2e, pool.throughput, 0.0]
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
            pool.recent_e2e, pool.throughput, pool.throughput / nh,
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
        system += [pool.recent_ttft, 0.0, pool.recent_tpot, 0.0, pool.recent_e2e, pool.throughput, 0.0]
        system += [pool.slo_violation_rate, pool.cost_rate, since, updated]
        cache = [0.0] * _N_CACHE
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
