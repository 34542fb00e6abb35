"""Compiled kernels of the OOD guard's per-request path (numba): :meth:`rlroute.export.ood.OodGuard.check`'s
elementwise scores and :meth:`rlroute.export.ood.ShiftWindow.update`, one call each instead of ~10 NumPy
calls on 224-element buffers.

Every operation is the NumPy formulation's, in float32 and in the same order (``(obs - mean) *
inv_sigma``, squared, capped, zeroed on an atom; ``|obs - mid| * inv_half``; the window's ``m += (x - m)
* w``, ``|m - mean| * inv``), and a maximum is NaN when any element is NaN, as ``ndarray.max``; the
block drifts stay one NumPy matmul (its summation order is BLAS's). ``tests/test_ood_kernels.py`` holds
the NumPy formulation these replaced (commit ``16220a5``) as its reference and checks them bit for bit.

Compiled on import (``cache=True``: from numba's on-disk cache after a process's first compile).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def guard_scores(obs: np.ndarray, mean: np.ndarray, inv_sigma: np.ndarray, atom: np.ndarray, zcap2: np.float32,
                 mid: np.ndarray, inv_half: np.ndarray, z: np.ndarray) -> bool:
    """Squared capped z-scores into ``z`` (0 where ``obs <= atom``); returns whether a feature lies outside
    its widened range (``max |obs - mid| * inv_half > 1``; False when that maximum is NaN)."""
    top = -np.inf
    nan = False
    for i in range(obs.size):
        x = obs[i]
        d = (x - mean[i]) * inv_sigma[i]
        d = d * d
        if d > zcap2:  # NaN stays NaN, as np.minimum
            d = zcap2
        if x <= atom[i]:
            d = np.float32(0.0)
        z[i] = d
        u = abs(x - mid[i]) * inv_half[i]
        if u != u:
            nan = True
        elif u > top:
            top = u
    return (not nan) and top > 1.0


@numba.njit(cache=True, nogil=True)
def window_update(obs: np.ndarray, idx: np.ndarray, m: np.ndarray, mean: np.ndarray, inv: np.ndarray,
                  w: np.float32) -> float:
    """Fold ``obs[idx]`` into the weighted mean ``m`` (in place) with weight ``w``; returns ``max |m - mean|
    * inv`` (NaN when any element is NaN)."""
    top = -np.inf
    nan = False
    for k in range(m.size):
        d = (obs[idx[k]] - m[k]) * w
        m[k] = m[k] + d
        e = abs(m[k] - mean[k]) * inv[k]
        if e != e:
            nan = True
        elif e > top:
            top = e
    return math.nan if nan else float(top)


def _compile() -> None:
    """Compile (or load) both kernels for float32 buffers, as the guard passes them."""
    x = np.zeros(4, np.float32)
    guard_scores(x, x, x, x, np.float32(16.0), x, x, np.zeros(4, np.float32))
    window_update(x, np.arange(2, dtype=np.int64), np.zeros(2, np.float32), x[:2], x[:2], np.float32(0.5))


_compile()  # now, not on a request
