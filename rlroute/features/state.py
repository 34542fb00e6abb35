"""The system (64) and cache (32) blocks, read from the typed :class:`ClusterState` only.

This runs once per routing decision: :func:`state_raw` reads the typed state's attributes into one flat
float64 array (one ``attrgetter`` call per instance and per pool; the state is dataclasses, so this part
stays in Python) and the compiled kernel :func:`rlroute.features.state_kernel.state_block` computes the 96
raw values from it, which the extractor transforms with one vectorised call. Order must match
``POOL_SYSTEM``, ``GLOBAL_SYSTEM`` and ``POOL_CACHE`` in :mod:`rlroute.features.spec`.

Conventions: statistics "over healthy instances" are 0 when a pool has none; an instance's KV usage is
``kv_used_tokens / kv_capacity_tokens``; prefix matches are aligned with ``pool.instances`` by position.
"""

from __future__ import annotations

import functools
import math
from operator import attrgetter
from typing import Any

import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.features.spec import GLOBAL_SYSTEM, POOL_CACHE, POOL_SYSTEM, SGLANG_CACHE_THRESHOLD
from rlroute.types import POOLS

_DAY = 86400.0
_TWO_PI = 2.0 * math.pi
_NEVER = 1e12  # "since last weight update" for a pool never updated: saturates at the cap
_SIZE = 2 * len(POOL_SYSTEM) + len(GLOBAL_SYSTEM) + 2 * len(POOL_CACHE)


@functools.cache
def _kernel() -> tuple[Any, attrgetter[Any], attrgetter[Any]]:
    """The kernel and the getters of its input layout (numba: imported, and compiled or loaded, on first use)."""
    from rlroute.features import state_kernel as k

    names = [r[0] for r in POOL_SYSTEM]
    if (len(POOL_SYSTEM), len(GLOBAL_SYSTEM), len(POOL_CACHE), names.index("kv_usage_mean"),
            names.index("cost_rate")) != (k.N_SYS, k.N_GLOBAL, k.N_CACHE, k.KV_MEAN, k.COST_RATE):
        raise AssertionError("rlroute.features.state_kernel's layout does not match rlroute.features.spec")
    return k.state_block, attrgetter(*k.ROW_FIELDS), attrgetter(*k.POOL_FIELDS)


def state_raw(state: ClusterState, matches: dict[str, list[int]], input_len: int) -> np.ndarray:
    """Raw values (float64) of the 64 system then 32 cache features, in schema order."""
    kernel, row, pool_fields = _kernel()
    now = state.time
    vals: list[float] = []
    for name in POOLS:
        pool = state.pools.get(name)
        if pool is None:
            vals.append(0.0)
            continue
        insts = pool.instances
        n = len(insts)
        match = matches.get(name)
        if match is None:
            match = [0] * n
        elif len(match) != n:
            raise ValueError(
                f"prefix_match for pool {pool.name!r} has {len(match)} entries but the pool has {n} instances"
            )
        lwu = pool.last_weight_update
        since, updated = (_NEVER, 0.0) if lwu is None else (max(now - lwu, 0.0), 1.0)
        vals += (1.0, n, *pool_fields(pool), since, updated)
        vals += match
        for r in map(row, insts):
            vals += r
    phase = _TWO_PI * ((state.day_offset + now) % _DAY) / _DAY
    raw = np.empty(_SIZE, dtype=np.float64)
    kernel(np.array(vals, dtype=np.float64), input_len, state.arrival_rate, math.sin(phase), math.cos(phase),
           SGLANG_CACHE_THRESHOLD, raw)
    return raw
