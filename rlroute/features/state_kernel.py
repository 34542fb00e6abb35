"""Compiled kernel of the system (64) and cache (32) blocks' raw values (numba): the arithmetic of
:func:`rlroute.features.state.state_raw` over one flat float64 array, in one call.

:func:`rlroute.features.state.state_raw` reads the typed state's attributes into that array (the one part
that must stay in Python: the state is dataclasses) and this kernel computes the 96 raw values from it, in
the order of ``POOL_SYSTEM``, ``GLOBAL_SYSTEM`` and ``POOL_CACHE`` (:mod:`rlroute.features.spec`). It is
the only implementation the env and the router run; ``tests/test_features_state_kernel.py`` holds the
Python formulation it replaced (commit ``16220a5``) as its reference and checks the raw values bit for bit
on random states (unhealthy, paused, empty pools, zero capacities, missing pools and matches). Every
operation is the reference's in the reference's order: sums left to right, ``max``/``min`` keeping the
first element unless a later one compares greater/smaller (Python's builtins), true divisions of exact
integers.

Input layout per pool, in ``POOLS`` order: a presence flag (0: the pool is missing, nothing follows),
then ``n`` (instances), the pool's recent TTFT, TPOT, e2e, throughput, SLO-miss rate, cost rate and hit
rate, the seconds since its last weight update and whether it had one, then ``n`` prefix matches, then
``n`` rows of :data:`ROW_FIELDS`.

Compiled on import (``cache=True``: from numba's on-disk cache after a process's first compile).
"""

from __future__ import annotations

import numba
import numpy as np

ROW_FIELDS = (
    "healthy", "paused", "queued", "running", "kv_used_tokens", "kv_capacity_tokens", "cache_tokens",
    "recent_ttft", "recent_tpot", "cache_hit_rate", "evictions_rate",
)  # fmt: skip
POOL_FIELDS = ("recent_ttft", "recent_tpot", "recent_e2e", "throughput", "slo_violation_rate", "cost_rate",
               "cache_hit_rate")
_H, _P, _Q, _R, _KVU, _KVC, _CT, _TT, _TP, _HR, _EV = range(len(ROW_FIELDS))
_W = len(ROW_FIELDS)
N_SYS, N_GLOBAL, N_CACHE = 28, 8, 16  # len(POOL_SYSTEM), len(GLOBAL_SYSTEM), len(POOL_CACHE)
KV_MEAN, COST_RATE = 13, 25  # indices of kv_usage_mean and cost_rate in POOL_SYSTEM


@numba.njit(cache=True, nogil=True, inline="always")
def _max(x: np.ndarray) -> float:
    m = x[0]
    for v in x[1:]:
        if v > m:
            m = v
    return m  # type: ignore[no-any-return]


@numba.njit(cache=True, nogil=True, inline="always")
def _min(x: np.ndarray) -> float:
    m = x[0]
    for v in x[1:]:
        if v < m:
            m = v
    return m  # type: ignore[no-any-return]


@numba.njit(cache=True, nogil=True, inline="always")
def _sum(x: np.ndarray) -> float:
    s = 0.0
    for v in x:
        s += v
    return s


@numba.njit(cache=True, nogil=True)
def _pool(buf: np.ndarray, pos: int, input_len: int, threshold: float, sys_out: np.ndarray,
          cache_out: np.ndarray) -> tuple[int, float, float]:
    """One pool's ``POOL_SYSTEM`` and ``POOL_CACHE`` raw values (written in place); returns the position
    after its input, its requests in the pool and its load per available instance (0 if none)."""
    n = int(buf[pos])
    ttft, tpot, e2e, thr = buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]
    slo, cost, hit = buf[pos + 5], buf[pos + 6], buf[pos + 7]
    since, updated = buf[pos + 8], buf[pos + 9]
    match = buf[pos + 10 : pos + 10 + n]
    rows = buf[pos + 10 + n : pos + 10 + n + n * _W].reshape((n, _W))
    nxt = pos + 10 + n + n * _W
    sys_out[:] = 0.0
    cache_out[:] = 0.0
    tail = np.array((ttft, 0.0, tpot, 0.0, e2e, thr, 0.0, slo, cost, since, updated))
    if n == 0:
        sys_out[12] = 256.0
        sys_out[17:] = tail
        return nxt, 0.0, 0.0
    in_pool = _sum(rows[:, _Q]) + _sum(rows[:, _R])  # integer counts: exact
    n_paused = _sum(rows[:, _P])
    healthy = rows[:, _H] != 0.0
    nh = int(healthy.sum())
    h = rows[healthy]
    hm = match[healthy]
    avail = healthy & (rows[:, _P] == 0.0)
    n_avail = int(avail.sum())
    load = in_pool / n_avail if n_avail else 256.0
    inv = 1.0 / max(input_len, 1)
    if nh == 0:
        sys_out[0] = n
        sys_out[2] = n_paused / n
        sys_out[12] = load
        sys_out[17:] = tail
        return nxt, in_pool, (load if n_avail else 0.0)
    q, r, kvu, kvc, ct = h[:, _Q], h[:, _R], h[:, _KVU], h[:, _KVC], h[:, _CT]
    cap = np.where(kvc == 0.0, 1.0, kvc)
    kv = kvu / cap
    util = ct / cap
    qs, rs = _sum(q), _sum(r)
    best_m = _max(hm)
    ib = 0
    while hm[ib] != best_m:
        ib += 1
    best_avail, ll_m, kv_free = 0.0, 0.0, 0.0
    if n_avail:
        al = rows[:, _Q][avail] + rows[:, _R][avail]
        am = match[avail]
        kv_free = _sum(rows[:, _KVC][avail] - rows[:, _KVU][avail])
        best_avail = _max(am)
        low = _min(al)
        il = 0
        while al[il] != low:
            il += 1
        ll_m = am[il]
    nz = 0
    for v in hm:
        nz += 1 if v != 0.0 else 0
    sys_out[:17] = np.array((float(n), nh / n, n_paused / n, 1.0 if n_avail else 0.0, qs / nh, _max(q), _min(q), rs / nh,
                             _max(r), _min(r), qs, rs, load, _sum(kv) / nh, _max(kv), _min(kv), kv_free))
    sys_out[17:] = tail
    sys_out[18] = _max(h[:, _TT])
    sys_out[20] = _max(h[:, _TP])
    sys_out[23] = thr / nh
    cache_out[:] = np.array((best_m * inv, best_m, _sum(hm) * inv / nh, best_avail * inv,
                             1.0 if best_avail * inv > threshold else 0.0, ll_m * inv, ll_m, q[ib] + r[ib],
                             nz / nh, _sum(util) / nh, _max(util), hit, _max(h[:, _HR]), _sum(rows[:, _EV]),
                             _max(rows[:, _EV]), _sum(ct)))
    return nxt, in_pool, (load if n_avail else 0.0)


@numba.njit(cache=True, nogil=True)
def state_block(buf: np.ndarray, input_len: int, arrival_rate: float, sin_t: float, cos_t: float, threshold: float,
                raw: np.ndarray) -> None:
    """The 96 raw values (system then cache) into ``raw`` from ``buf`` (layout: the module doc), the arrival
    rate and the time of day's sine and cosine."""
    pos = 0
    in_sys = np.zeros(2)
    loads = np.zeros(2)
    kvm = np.zeros(2)
    cost_rate = 0.0
    for k in range(2):
        sys_out = raw[k * N_SYS : (k + 1) * N_SYS]
        cache_out = raw[2 * N_SYS + N_GLOBAL + k * N_CACHE : 2 * N_SYS + N_GLOBAL + (k + 1) * N_CACHE]
        if buf[pos] == 0.0:
            sys_out[:] = 0.0
            cache_out[:] = 0.0
            pos += 1
            continue
        pos, in_sys[k], loads[k] = _pool(buf, pos + 1, input_len, threshold, sys_out, cache_out)
        kvm[k] = sys_out[KV_MEAN]
        cost_rate += sys_out[COST_RATE]
    total = in_sys[0] + in_sys[1]
    g = raw[2 * N_SYS : 2 * N_SYS + N_GLOBAL]
    g[0], g[1], g[2] = arrival_rate, sin_t, cos_t
    g[3] = total
    g[4] = in_sys[0] / total if total > 0 else 0.0
    g[5] = cost_rate
    g[6] = kvm[0] - kvm[1]
    g[7] = (loads[0] - loads[1]) / (loads[0] + loads[1] + 1.0)


state_block(np.array([0.0, 0.0]), 1, 0.0, 0.0, 1.0, 0.3, np.zeros(96))  # compile (or load) now, not on a request
