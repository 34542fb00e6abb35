"""Observation normalisation that cannot blow a feature up: ``VecNormalize`` clipped to the training range.

SB3's ``VecNormalize`` standardises each feature with its running mean and variance. A feature that was
(nearly) constant in training has a variance of ~1e-9, so any other value at run time — a pool that is
unhealthy for the first time, a category the training workload never drew — becomes ``±clip_obs`` (±10),
far outside anything the network has seen. :class:`RangeVecNormalize` keeps, beside the running moments,
the per-feature minimum and maximum of every observation it was updated with, and clips the raw
observation to that range *before* standardising. In training this is the identity on every observation
the statistics were updated with (the update comes first in ``reset`` and ``step_wait``); only the
terminal observations SB3 normalises for bootstrapping without an update can be clipped. At run time a
constant feature stays at its training value (standardised: ~0) whatever the input.

The exported ONNX graph applies the same clip, in float64, before the same standardisation
(:class:`rlroute.export.graph.ObsNorm` reads ``obs_rms.low``/``high``), so training, ``SB3Policy`` and the
served graph agree bit for bit. Whether an observation is out of the training range is the OOD guard's
business (:mod:`rlroute.export.ood`), which sees the raw observation, not the clipped one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize


class RangeRunningMeanStd(RunningMeanStd):
    """``RunningMeanStd`` that also tracks the elementwise minimum and maximum of what it was updated with.

    Attributes:
        low: float64 minimum per feature (``+inf`` before the first update).
        high: float64 maximum per feature (``-inf`` before the first update).
    """

    def __init__(self, epsilon: float = 1e-4, shape: tuple[int, ...] = ()) -> None:
        super().__init__(epsilon=epsilon, shape=shape)
        self.low = np.full(shape, np.inf, dtype=np.float64)
        self.high = np.full(shape, -np.inf, dtype=np.float64)

    @property
    def seen(self) -> bool:
        """True once at least one observation was recorded (the range is defined)."""
        return bool(np.all(self.low <= self.high))

    def update(self, arr: np.ndarray) -> None:
        """Update the moments (SB3) and the range with a batch ``arr[batch, *shape]``."""
        super().update(arr)
        np.minimum(self.low, np.min(arr, axis=0), out=self.low)
        np.maximum(self.high, np.max(arr, axis=0), out=self.high)

    def copy(self) -> RangeRunningMeanStd:
        """A deep copy, range included."""
        out = RangeRunningMeanStd(shape=self.mean.shape)
        out.mean, out.var, out.count = self.mean.copy(), self.var.copy(), float(self.count)
        out.low, out.high = self.low.copy(), self.high.copy()
        return out

    def combine(self, other: RunningMeanStd) -> None:
        """Merge another instance's statistics (and range, when it has one) into this one."""
        super().combine(other)
        if isinstance(other, RangeRunningMeanStd):
            np.minimum(self.low, other.low, out=self.low)
            np.maximum(self.high, other.high, out=self.high)


def clip_to_range(obs: np.ndarray, rms: Any) -> np.ndarray:
    """``obs`` clipped to ``rms``'s training range when it has one (else unchanged)."""
    if isinstance(rms, RangeRunningMeanStd) and rms.seen:
        return np.clip(obs, rms.low, rms.high)
    return obs


class RangeVecNormalize(VecNormalize):
    """``VecNormalize`` whose observation statistics track the training range and clip to it first.

    Same arguments as SB3's ``VecNormalize``; only ``Box`` observations are supported (the routing env's).
    """

    def __init__(self, venv: VecEnv, **kwargs: Any) -> None:
        super().__init__(venv, **kwargs)
        if isinstance(self.obs_rms, dict):
            raise ValueError("RangeVecNormalize supports Box observations only, got a Dict space")
        self.obs_rms = RangeRunningMeanStd(shape=self.obs_rms.mean.shape)

    def _normalize_obs(self, obs: np.ndarray, obs_rms: RunningMeanStd) -> np.ndarray:
        return super()._normalize_obs(clip_to_range(obs, obs_rms), obs_rms)
