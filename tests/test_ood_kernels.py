"""The OOD guard's compiled per-request path (rlroute.export.ood_kernels) equals its NumPy reference bit for bit.

The reference below is ``OodGuard.check`` and ``ShiftWindow.update`` as they were before the kernels
(commit ``16220a5``): ~10 NumPy calls each on float32 buffers, used only here. Observations: typical,
shifted, far outside the training range, exactly on a recurring training minimum (an atom), and NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlroute.export.ood import Z_CAP, ObsStats, OodGuard, calibrate

DIM = 24
SLICES = {"request": slice(0, 12), "system": slice(12, 20), "cache": slice(20, 24)}
WINDOW = (3, 4, 9)


def _obs(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0.2 + shift, 0.1, size=(n, DIM)).astype(np.float32)
    x[:, 23] = 0.5
    x[: n // 2, 7] = 0.0  # a recurring minimum: an atom
    return x


def _ref_check(g: OodGuard, obs: np.ndarray) -> tuple[bool, np.ndarray]:
    z, u = np.empty(DIM, np.float32), np.empty(DIM, np.float32)
    np.subtract(obs, g._mean, out=z)
    np.multiply(z, g._inv_sigma, out=z)
    np.multiply(z, z, out=z)
    np.minimum(z, Z_CAP * Z_CAP, out=z)
    z[obs <= g._atom] = 0.0
    drift2 = z @ g._w
    np.subtract(obs, g._mid, out=u)
    np.abs(u, out=u)
    np.multiply(u, g._inv_half, out=u)
    return bool(u.max() > 1.0 or drift2.max() > 1.0), drift2


def _ref_update(w: object, m: np.ndarray, n: int, obs: np.ndarray) -> float:
    d = obs[list(w.dims)] - m  # type: ignore[attr-defined]
    d *= np.float32(max(1.0 / n, w._a))  # type: ignore[attr-defined]
    m += d
    d = np.abs(m - w._mean32) * w._inv32  # type: ignore[attr-defined]
    score = float(d.max())
    return score * math.sqrt(n / w._neff) if n < w._neff else score  # type: ignore[attr-defined]


def _cases() -> np.ndarray:
    x = np.concatenate([_obs(400, 1), _obs(200, 2, shift=0.3), _obs(50, 3, shift=5.0)])
    x[10, 5] = np.nan
    x[11, 3] = np.nan  # a watched feature
    x[12, :] = np.inf
    x[13, 7] = -1.0  # below the atom
    return x


def test_check_and_window_bit_identical() -> None:
    stats = ObsStats.from_obs(_obs(20_000, 0), "test: train")
    guard, _ = calibrate(stats, SLICES, _obs(3_000, 5), _obs(3_000, 6), target_fpr=0.01, window=WINDOW)
    assert guard.window is not None and np.isfinite(guard._atom).any()
    m = np.zeros(len(WINDOW), np.float32)
    np.seterr(invalid="ignore")  # inf - inf in the reference, as in the kernel
    for n, obs in enumerate(_cases(), start=1):
        want_out, want_d2 = _ref_check(guard, obs)
        got_out, got_d2 = guard.check(obs)
        assert got_out == want_out and got_d2.tobytes() == want_d2.tobytes(), n
        want = _ref_update(guard.window, m, n, obs)
        got = guard.window.update(obs)
        assert np.float64(got).tobytes() == np.float64(want).tobytes(), n
        assert guard.window._m.tobytes() == m.tobytes()


def test_a_wrong_size_observation_is_an_error() -> None:
    stats = ObsStats.from_obs(_obs(2_000, 0), "test: train")
    guard, _ = calibrate(stats, SLICES, _obs(500, 5), _obs(500, 6), target_fpr=0.05, window=WINDOW)
    assert guard.window is not None
    for bad in (np.zeros(10, np.float32), np.zeros((1, DIM), np.float32)):
        with pytest.raises(ValueError, match="shape"):
            guard.check(bad)
    with pytest.raises(ValueError, match="shape"):
        guard.window.update(np.zeros(5, np.float32))
