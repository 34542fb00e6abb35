"""The system (64) and cache (32) blocks, read from the typed :class:`ClusterState` only.

This runs once per routing decision: :func:`state_features` reads the typed state's attributes into one flat
float64 array (one ``attrgetter`` call per instance and per pool, packed by one ``struct`` call: the state is
dataclasses, so this part stays in Python), the compiled kernel
:func:`rlroute.features.state_kernel.state_block` computes the 96 raw values from it and the transform's
first step, NumPy's ``log1p`` runs on the ``log`` features and :func:`rlroute.features.state_kernel.finish`
writes the transformed block (:class:`rlroute.features.schema.BlockTransform`'s values, bit for bit) into
the observation. :func:`state_raw` gives the raw values. Order must match ``POOL_SYSTEM``, ``GLOBAL_SYSTEM``
and ``POOL_CACHE`` in :mod:`rlroute.features.spec`.

Conventions: statistics "over healthy instances" are 0 when a pool has none; an instance's KV usage is
``kv_used_tokens / kv_capacity_tokens``; prefix matches are aligned with ``pool.instances`` by position.
"""

from __future__ import annotations

import functools
import math
import struct
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.features.spec import GLOBAL_SYSTEM, POOL_CACHE, POOL_SYSTEM, SGLANG_CACHE_THRESHOLD
from rlroute.types import POOLS

if TYPE_CHECKING:
    from rlroute.features.schema import BlockTransform

_DAY = 86400.0
_TWO_PI = 2.0 * math.pi
_NEVER = 1e12  # "since last weight update" for a pool never updated: saturates at the cap
_SIZE = 2 * len(POOL_SYSTEM) + len(GLOBAL_SYSTEM) + 2 * len(POOL_CACHE)
_ONES = np.ones(_SIZE)  # the raw values: no transform
_NO_LOGS = np.zeros(0, dtype=np.int64)
_NO_LOG_VALUES = np.zeros(0, dtype=np.float64)


@functools.cache
def _kernel() -> tuple[Any, attrgetter[Any], attrgetter[Any], Any]:
    """The raw-value kernel, the getters of its input layout and the transform's last kernel (numba: imported,
    and compiled or loaded, on first use)."""
    from rlroute.features import state_kernel as k

    names = [r[0] for r in POOL_SYSTEM]
    if (len(POOL_SYSTEM), len(GLOBAL_SYSTEM), len(POOL_CACHE), names.index("kv_usage_mean"),
            names.index("cost_rate")) != (k.N_SYS, k.N_GLOBAL, k.N_CACHE, k.KV_MEAN, k.COST_RATE):
        raise AssertionError("rlroute.features.state_kernel's layout does not match rlroute.features.spec")
    return k.state_block, attrgetter(*k.ROW_FIELDS), attrgetter(*k.POOL_FIELDS), k.finish


def _gather(state: ClusterState, matches: dict[str, list[int]]) -> np.ndarray:
    """The kernel's input array (layout: :mod:`rlroute.features.state_kernel`)."""
    _, row, pool_fields, _ = _kernel()
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
    buf = np.empty(len(vals), dtype=np.float64)
    # one struct call: ~1.5 us faster than np.array(vals) on ~170 Python numbers (an ndarray is a writable buffer)
    try:
        _packer(len(vals)).pack_into(buf, 0, *vals)  # type: ignore[arg-type]
    except struct.error as e:
        bad = next((v for v in vals if not isinstance(v, (int, float))), None)
        raise ValueError(f"cluster state: a field the features read ({', '.join(_pool_read())}) holds {bad!r}, "
                         f"expected a number ({e})") from e
    return buf


@functools.cache
def _pool_read() -> tuple[str, ...]:
    from rlroute.features import state_kernel as k

    return (*(f"pool.{f}" for f in k.POOL_FIELDS), *(f"instance.{f}" for f in k.ROW_FIELDS))


@functools.cache
def _packer(n: int) -> struct.Struct:
    return struct.Struct(f"{n}d")


def _phase(state: ClusterState) -> float:
    return _TWO_PI * ((state.day_offset + state.time) % _DAY) / _DAY


def state_raw(state: ClusterState, matches: dict[str, list[int]], input_len: int) -> np.ndarray:
    """Raw values (float64) of the 64 system then 32 cache features, in schema order."""
    kernel = _kernel()[0]
    phase = _phase(state)
    raw = np.empty(_SIZE, dtype=np.float64)
    kernel(_gather(state, matches), input_len, state.arrival_rate, math.sin(phase), math.cos(phase),
           SGLANG_CACHE_THRESHOLD, _ONES, _NO_LOGS, raw, _NO_LOG_VALUES)
    return raw


def state_features(state: ClusterState, matches: dict[str, list[int]], input_len: int, tf: BlockTransform,
                   out: np.ndarray) -> None:
    """The transformed system and cache blocks (``tf``: the schema's transform of both) into ``out``
    (float32, 96): ``tf(state_raw(...), out)`` bit for bit, in two compiled calls around NumPy's ``log1p``."""
    kernel, _, _, finish = _kernel()
    phase = _phase(state)
    raw = np.empty(_SIZE, dtype=np.float64)
    logs = np.empty(tf.log_idx.size, dtype=np.float64)
    kernel(_gather(state, matches), input_len, state.arrival_rate, math.sin(phase), math.cos(phase),
           SGLANG_CACHE_THRESHOLD, tf.mul, tf.log_idx, raw, logs)
    np.log1p(logs, out=logs)
    finish(raw, logs, tf.log_idx, tf.post_log, tf.low, tf.high, out)
