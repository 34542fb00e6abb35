"""Compiled kernels of the system (64) and cache (32) blocks (numba): the arithmetic of
:func:`rlroute.features.state.state_raw` over one flat float64 array, then the schema's transform around
NumPy's ``log1p``.

:func:`rlroute.features.state.state_features` reads the typed state's attributes into that array (the one
part that must stay in Python: the state is dataclasses); :func:`state_block` computes the 96 raw values
from it, in the order of ``POOL_SYSTEM``, ``GLOBAL_SYSTEM`` and ``POOL_CACHE`` (:mod:`rlroute.features.spec`),
and the transform's first step; NumPy's ``log1p`` runs on the ``log`` features; :func:`finish` does the
rest of :class:`rlroute.features.schema.BlockTransform` into the observation. It is the only
implementation the env and the router run; ``tests/test_features_state_kernel.py`` holds the Python
formulation it replaced (commit ``16220a5``) as its reference and checks the raw values bit for bit on
random states (unhealthy, paused, empty pools, zero capacities, missing pools and matches), and the
transformed block against :class:`~rlroute.features.schema.BlockTransform` (NumPy) bit for bit. Every
operation is the reference's in the reference's order: sums left to right, ``max``/``min`` keeping the
first element unless a later one compares greater/smaller (Python's builtins), true divisions of exact
integers; one pass over the instance rows, no temporary arrays.

Input layout per pool, in ``POOLS`` order: a presence flag (0: the pool is missing, nothing follows),
then ``n`` (instances), the pool's recent TTFT, TPOT, e2e, throughput, SLO-miss rate, cost rate, hit
rate and reply length (output tokens per completion), the seconds since its last weight update and whether it
had one, then ``n`` prefix matches, then
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
               "cache_hit_rate", "recent_output_tokens")
_H, _P, _Q, _R, _KVU, _KVC, _CT, _TT, _TP, _HR, _EV = range(len(ROW_FIELDS))
_W = len(ROW_FIELDS)
N_SYS, N_GLOBAL, N_CACHE = 28, 8, 16  # len(POOL_SYSTEM), len(GLOBAL_SYSTEM), len(POOL_CACHE)
KV_MEAN, COST_RATE = 13, 25  # indices of kv_usage_mean and cost_rate in POOL_SYSTEM


@numba.njit(cache=True, nogil=True)
def _pool(buf: np.ndarray, pos: int, input_len: int, threshold: float, sys_out: np.ndarray,
          cache_out: np.ndarray) -> tuple[int, float, float]:
    """One pool's ``POOL_SYSTEM`` and ``POOL_CACHE`` raw values (written in place); returns the position
    after its input, its requests in the pool and its load per available instance (0 if none).

    Scalar loops over the instance rows, no temporary arrays. "Healthy" sums, maxima and minima run over
    the healthy rows in order, "available" ones over the healthy and unpaused rows; a maximum (minimum)
    starts from the first such row and moves only to a strictly greater (smaller) value."""
    n = int(buf[pos])
    ttft, tpot, e2e, thr = buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]
    slo, cost, hit, reply = buf[pos + 5], buf[pos + 6], buf[pos + 7], buf[pos + 8]
    since, updated = buf[pos + 9], buf[pos + 10]
    mp = pos + 11  # matches
    rp = mp + n  # rows
    nxt = rp + n * _W
    sys_out[:] = 0.0
    cache_out[:] = 0.0
    sys_out[17], sys_out[19], sys_out[21], sys_out[22], sys_out[23] = ttft, tpot, e2e, thr, reply
    sys_out[24], sys_out[25], sys_out[26], sys_out[27] = slo, cost, since, updated
    if n == 0:
        sys_out[12] = 256.0
        return nxt, 0.0, 0.0
    q_all, r_all, n_paused, ev_sum, ev_max = 0.0, 0.0, 0.0, 0.0, 0.0
    nh, n_avail = 0, 0
    for i in range(n):
        row = rp + i * _W
        q_all += buf[row + _Q]
        ev_sum += buf[row + _EV]
        if i == 0 or buf[row + _EV] > ev_max:
            ev_max = buf[row + _EV]
        n_paused += buf[row + _P]
        if buf[row + _H] != 0.0:
            nh += 1
            if buf[row + _P] == 0.0:
                n_avail += 1
    for i in range(n):
        r_all += buf[rp + i * _W + _R]
    in_pool = q_all + r_all  # integer counts: exact
    load = in_pool / n_avail if n_avail else 256.0
    inv = 1.0 / max(input_len, 1)
    if nh == 0:
        sys_out[0] = n
        sys_out[2] = n_paused / n
        sys_out[12] = load
        return nxt, in_pool, (load if n_avail else 0.0)
    qs, rs, kv_sum, util_sum, ct_sum, hm_sum, kv_free = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    nz = 0
    first, first_a = True, True
    best_avail, ll_m, low = 0.0, 0.0, 0.0
    q_max = q_min = r_max = r_min = kv_max = kv_min = util_max = tt_max = tp_max = hr_max = 0.0
    best_m = q_best = r_best = 0.0
    for i in range(n):
        row = rp + i * _W
        if buf[row + _H] == 0.0:
            continue
        q, r, kvu, kvc, ct = buf[row + _Q], buf[row + _R], buf[row + _KVU], buf[row + _KVC], buf[row + _CT]
        m = buf[mp + i]
        cap = 1.0 if kvc == 0.0 else kvc
        kv = kvu / cap
        util = ct / cap
        qs += q
        rs += r
        kv_sum += kv
        util_sum += util
        ct_sum += ct
        hm_sum += m
        nz += 1 if m != 0.0 else 0
        if first:
            first = False
            q_max, q_min, r_max, r_min, kv_max, kv_min, util_max = q, q, r, r, kv, kv, util
            tt_max, tp_max, hr_max, best_m, q_best, r_best = buf[row + _TT], buf[row + _TP], buf[row + _HR], m, q, r
        else:
            if q > q_max:
                q_max = q
            if q < q_min:
                q_min = q
            if r > r_max:
                r_max = r
            if r < r_min:
                r_min = r
            if kv > kv_max:
                kv_max = kv
            if kv < kv_min:
                kv_min = kv
            if util > util_max:
                util_max = util
            if buf[row + _TT] > tt_max:
                tt_max = buf[row + _TT]
            if buf[row + _TP] > tp_max:
                tp_max = buf[row + _TP]
            if buf[row + _HR] > hr_max:
                hr_max = buf[row + _HR]
            if m > best_m:
                best_m, q_best, r_best = m, q, r
        if buf[row + _P] == 0.0:  # available
            kv_free += kvc - kvu
            al = q + r
            if first_a:
                first_a = False
                best_avail, low, ll_m = m, al, m
            else:
                if m > best_avail:
                    best_avail = m
                if al < low:
                    low, ll_m = al, m
    sys_out[0] = n
    sys_out[1] = nh / n
    sys_out[2] = n_paused / n
    sys_out[3] = 1.0 if n_avail else 0.0
    sys_out[4], sys_out[5], sys_out[6] = qs / nh, q_max, q_min
    sys_out[7], sys_out[8], sys_out[9] = rs / nh, r_max, r_min
    sys_out[10], sys_out[11], sys_out[12] = qs, rs, load
    sys_out[13], sys_out[14], sys_out[15], sys_out[16] = kv_sum / nh, kv_max, kv_min, kv_free
    sys_out[18] = tt_max
    sys_out[20] = tp_max
    cache_out[0], cache_out[1], cache_out[2] = best_m * inv, best_m, hm_sum * inv / nh
    cache_out[3] = best_avail * inv
    cache_out[4] = 1.0 if best_avail * inv > threshold else 0.0
    cache_out[5], cache_out[6], cache_out[7] = ll_m * inv, ll_m, q_best + r_best
    cache_out[8], cache_out[9], cache_out[10] = nz / nh, util_sum / nh, util_max
    cache_out[11], cache_out[12], cache_out[13], cache_out[14], cache_out[15] = hit, hr_max, ev_sum, ev_max, ct_sum
    return nxt, in_pool, (load if n_avail else 0.0)


@numba.njit(cache=True, nogil=True)
def state_block(buf: np.ndarray, input_len: int, arrival_rate: float, sin_t: float, cos_t: float, threshold: float,
                mul: np.ndarray, log_idx: np.ndarray, raw: np.ndarray, logs: np.ndarray) -> None:
    """The 96 raw values (system then cache) from ``buf`` (layout: the module doc), the arrival rate and the
    time of day's sine and cosine, times ``mul`` (the transform's first step; ones: the raw values), into
    ``raw``; then ``logs[k] = raw[log_idx[k]]`` (the values the transform's ``log1p`` takes)."""
    pos = 0
    in_0, in_1, load_0, load_1, kvm_0, kvm_1 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    cost_rate = 0.0
    for k in range(2):
        sys_out = raw[k * N_SYS : (k + 1) * N_SYS]
        cache_out = raw[2 * N_SYS + N_GLOBAL + k * N_CACHE : 2 * N_SYS + N_GLOBAL + (k + 1) * N_CACHE]
        if buf[pos] == 0.0:
            sys_out[:] = 0.0
            cache_out[:] = 0.0
            pos += 1
            continue
        pos, in_k, load_k = _pool(buf, pos + 1, input_len, threshold, sys_out, cache_out)
        if k == 0:
            in_0, load_0, kvm_0 = in_k, load_k, sys_out[KV_MEAN]
        else:
            in_1, load_1, kvm_1 = in_k, load_k, sys_out[KV_MEAN]
        cost_rate += sys_out[COST_RATE]
    total = in_0 + in_1
    g = raw[2 * N_SYS : 2 * N_SYS + N_GLOBAL]
    g[0], g[1], g[2] = arrival_rate, sin_t, cos_t
    g[3] = total
    g[4] = in_0 / total if total > 0 else 0.0
    g[5] = cost_rate
    g[6] = kvm_0 - kvm_1
    g[7] = (load_0 - load_1) / (load_0 + load_1 + 1.0)
    for i in range(raw.size):
        raw[i] = raw[i] * mul[i]
    for k in range(log_idx.size):
        logs[k] = raw[log_idx[k]]


@numba.njit(cache=True, nogil=True)
def finish(raw: np.ndarray, logs: np.ndarray, log_idx: np.ndarray, post_log: np.ndarray, low: np.ndarray,
           high: np.ndarray, out: np.ndarray) -> None:
    """The rest of :class:`rlroute.features.schema.BlockTransform` after its ``log1p`` (``logs``, computed by
    NumPy: its ``log1p`` defines those values): ``raw[log_idx[k]] = logs[k] * post_log[k]``, then NumPy's
    ``fmax(raw, low)`` and ``fmin(.., high)`` into float32 ``out``. Those two run NumPy's SIMD loops on a
    96-element block, which return the second operand on a tie or a NaN: the bound (so -0.0 against a
    0.0 bound gives 0.0, NaN gives ``low``), as written here."""
    for k in range(log_idx.size):
        raw[log_idx[k]] = logs[k] * post_log[k]
    for i in range(raw.size):
        y = raw[i]
        y = y if y > low[i] else low[i]
        y = y if y < high[i] else high[i]
        out[i] = np.float32(y)


def _compile() -> None:
    """Compile (or load from the on-disk cache) both kernels for the argument types the features pass."""
    raw, idx, logs = np.zeros(96), np.zeros(2, np.int64), np.zeros(2)
    state_block(np.zeros(2), 1, 0.0, 0.0, 1.0, 0.3, np.ones(96), idx, raw, logs)
    finish(raw, logs, idx, logs, raw, raw, np.zeros(96, np.float32))


_compile()  # now, not on a request
