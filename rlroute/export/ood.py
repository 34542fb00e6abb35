"""Out-of-distribution guard: the training observation statistics, a per-block drift score and its calibration.

An exported policy carries, in its manifest's ``ood`` field, what its training observations looked like
(per feature: mean, variance, minimum, maximum — from the run's :class:`~rlroute.train.normalize.RangeVecNormalize`,
or from env rollouts for a fresh export) and thresholds calibrated on the **validation** split. For one
raw observation ``x`` the guard computes, per block ``b`` (request / system / cache):

* ``drift_b = sqrt(mean_{i in b} min(z_i^2, Z_CAP^2)) / tau_b`` with
  ``z_i = (x_i - mean_i) / sqrt(var_i + VAR_FLOOR)``: the root-mean-square z-score of the block (a diagonal
  Mahalanobis distance per dimension, each term capped so that one rarely-active hashed-text dimension
  cannot dominate its block; a single feature's extreme is the range check's job) relative to its
  calibrated threshold ``tau_b``; ``drift_b > 1`` flags the block;
* a range check: some feature of the block lies outside its training range widened on each side by
  ``log(range_factor) / log1p(cap_i / unit_i)`` for a ``log`` feature of the schema — a count, length,
  time or rate more than ``range_factor`` times (in ``1 + x / unit``) beyond the largest (or below the
  smallest) seen in training — and by ``range_margin * max(high_i - low_i, WIDTH_FLOOR)`` for a ``lin``
  feature (ratios, shares, flags). Features in ``range_exempt`` — the request block's hashed text
  dimensions (:func:`text_dims`): signed random projections of n-grams, whose per-dimension extremes say
  nothing about a prompt being unusual and, over 112 dimensions, would flag ordinary prompts by chance —
  count in their block's drift only.

Features in ``ignored`` are left out of both scores (:func:`guard_layout`):

* the clock, ``system.time_of_day_*``: the env's clock starts at 0 every episode, the router's is the wall clock
  (first measurement, issue 12 item 5: 100 % false positives at any hour but midnight); the policy sees it
  clipped to its training range (:mod:`rlroute.train.normalize`);
* every feature the router's own routing moves (:func:`routed_dims`): in the system block all but each pool's
  size, health, pause, availability and weight-update age and the arrival rate; the whole cache block (what
  each pool's cache holds is where earlier requests were sent). The guard asks whether the *traffic and the
  fleet* are what the policy was trained on; how the pools' load splits is the policy's own doing. Scored, it
  made the fallback hold itself up: one refused decision hands the request to the seed heuristic, which routes
  differently, the pools' load moves where the learned policy never took it, and every later decision is
  refused as well. Measured on the scenario study's run 4 (``experiments/scenarios/served_guard.py``, validation
  episodes 1002-1005, the guard calibrated on the same observations): provisioned_fleet's served policy refused
  99.9 % of the decisions (reward 0.678 against 0.802 unguarded), the same export scoring only these exogenous
  features refused 0.5 % (0.803).

A feature whose training minimum recurs (``ATOM_COUNT`` training observations exactly on it: an empty queue,
nothing cached) is zero-inflated: a value on that minimum deviates by 0 in the drift (scored by z, the empty
pools every episode starts from sat at the threshold: 0.7-1.7 % of 300-request replay windows flagged).

Why a ``log`` feature's margin is a factor: the range's limits are the training sample's extremes, unstable
for heavy-tailed load features — a replay through the router (schema v2, windows 1-3 of
``experiments/parity/ood.py``, fixed before its reported windows) saw large-pool queues of 4-7 where 3,600
training observations had at most 2, which a quarter of the training width flagged on 1-6 % of decisions.
``range_factor`` = 4 in ``1 + x / unit`` (``RANGE_FACTOR``, an assumption: two doublings) leaves such tails alone.

**Saturation.** A ``log`` feature is clipped at its cap (``request.input_tokens`` at 32,768 tokens, a queue
at 256): every raw value at or beyond it is the same observation, 1.0. When the training maximum lies within
the range factor of the cap, the widened range contains the cap and cannot tell a value just past training
from one a hundred times larger: on the parity bench's v4 policy, guard windows at 2-16 req/s raised the
training maximum of ``request.input_tokens`` to 0.835 (9,300 tokens; widened limit 37,000, past the cap) and
40k- and 80k-token prompts were no longer refused. So a feature in ``saturation`` (``(index, value at the
cap)``: every ``log`` feature, :func:`guard_layout`) whose training maximum stays below its cap has its range
end just below the cap (``SAT_EPS``): a saturated value, a raw value of at least the cap by an amount the
observation no longer says, is out of range — in raw units the check refuses ``x >= min(range_factor (unit +
high_raw), cap)``. A feature that reached its cap in training (``since_weight_update`` when no update
happened) keeps its widened range; the calibration's margin widening (below) never moves a cap limit.

**The request window** (:class:`ShiftWindow`, the guard's only state). Scoring one observation at a time
cannot see a shift of the traffic whose single requests all lie in range: the parity bench's replay with
every prompt repeated 8 times (input lengths 8x training's, each within the training range) was flagged on
4.8 % of its decisions once the routed features were left out (it had been caught through the queues its
long prompts built). So the guard also keeps an exponentially weighted mean ``m`` of the request block's
scalar features (:func:`window_dims`: lengths, turn, session, cues; not the hashed text) over recent
decisions and scores ``window = max_i |m_i - mean_i| / sigma_i * sqrt(min(n, n_eff) / n_eff) / tau_w``:
the largest standardised shift of a recent mean from its training mean, damped while the window holds
fewer than its effective size ``n_eff = (2 - a) / a`` of decisions (``a`` the per-decision weight of
half-life ``WINDOW_HALFLIFE``; a plain mean of ``n`` decisions is that much noisier, so the first decisions
of a fresh router are not refused on chance). ``window > 1`` refuses the decision like a flagged block. The
threshold ``tau_w`` is ``WINDOW_MARGIN`` times the largest window score over the fit half of the
calibration (in recording order). Chosen on the parity policy (``experiments/parity``, its ``val``
calibration windows; replay windows 11-15 and shifted windows 11-12 of ``experiments/parity/ood.py``
looked at while choosing, its reported windows are 21+): the fit half's largest score 0.50, the replay
windows' 0.46-0.77 (1.55 x), the 8x trace's median 1.75 and 4x's 1.2 — half-life 64 and margin 2 refuse
~73 % of a fresh 300-request 8x window (the first ~80 decisions fill the window) and none of the replay.

The observation is out of distribution when any block is flagged or the window is; the router then lets
the seed heuristic decide (reason ``out_of_distribution``). Scoring one observation is one compiled call on
preallocated buffers and one matmul (:meth:`OodGuard.check`, :mod:`rlroute.export.ood_kernels`).

**Calibration.** Validation observations are split in two halves (by episode seed). The thresholds are the
per-block ``1 - q`` quantiles of the fit half's block scores, with the largest ``q`` whose joint false-positive
rate on the fit half (any block over its threshold, or out of range) is at most ``target_fpr / 2``, each moved
up to the middle of the gap to the next larger fit-half score (:func:`_midgap`: it keeps the fit half's flags
and leaves the widest margin on both sides); the other half measures the false-positive rate the manifest
reports (``fpr_holdout``, at most ``target_fpr``). When the range check alone flags more than ``target_fpr /
4`` of the fit half, the margin is doubled until it does not (recorded). Training data never measure a rate.

Assumptions (parameters, not facts): ``RANGE_FACTOR`` = 4 (above); ``WINDOW_HALFLIFE`` = 64 decisions and
``WINDOW_MARGIN`` = 2 (above: the calibration windows are few, a deployment's largest innocent shift is
larger than theirs); ``ATOM_COUNT`` = 5; ``VAR_FLOOR`` = 1e-4
(a feature's spread is taken as at least 0.01 schema units: a feature constant in training scores z = 100
per unit of deviation instead of infinity); ``WIDTH_FLOOR`` = 0.05 for the range margin of (near-)constant
features; ``range_margin`` = 0.25 of the training width; ``Z_CAP`` = 4 (one feature's squared z counts at
most 16 in its block's mean); ``SAT_EPS`` = 1e-6 (within 1e-6 of its cap a value is saturated: ~17 float32
ulps at 1.0).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REASON_OOD = "out_of_distribution"
BLOCKS: tuple[str, ...] = ("request", "system", "cache")
VAR_FLOOR = 1e-4
WIDTH_FLOOR = 0.05
RANGE_MARGIN = 0.25
RANGE_FACTOR = 4.0
ATOM_COUNT = 5
TARGET_FPR = 0.01
Z_CAP = 4.0
SAT_EPS = 1e-6
WINDOW_HALFLIFE = 64.0
WINDOW_MARGIN = 2.0
TEXT_PREFIX = "request.text_"
CLOCK_PREFIX = "system.time_of_day_"
# System features the router's decisions do not move (per pool, and global); the guard scores only these
# of the system and cache blocks (module doc).
EXOGENOUS_POOL = ("instances", "healthy_frac", "paused_frac", "available", "since_weight_update", "weights_updated")
EXOGENOUS_GLOBAL = ("system.arrival_rate",)


@functools.cache
def _kernels() -> tuple[Any, Any]:
    """``(guard_scores, window_update)`` of :mod:`rlroute.export.ood_kernels` (numba: imported, and compiled or
    loaded, on first use; a cached getter rather than an import statement per decision, which costs ~0.7 us)."""
    from rlroute.export.ood_kernels import guard_scores, window_update

    return guard_scores, window_update


def text_dims(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Indices of the hashed text features (exempt from the range check) in a schema's ``names``."""
    return tuple(i for i, n in enumerate(names) if n.startswith(TEXT_PREFIX))


def routed_dims(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Indices of the system and cache features that the router's own routing moves (module doc)."""
    pools = {n.split(".")[1] for n in names if n.startswith("system.") and n.count(".") == 2}
    keep = {f"system.{p}.{f}" for p in pools for f in EXOGENOUS_POOL} | set(EXOGENOUS_GLOBAL)
    return tuple(i for i, n in enumerate(names) if n.startswith(("system.", "cache.")) and n not in keep)


def window_dims(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Indices of the request block's scalar features (not the hashed text): what :class:`ShiftWindow` watches."""
    return tuple(i for i, n in enumerate(names) if n.startswith("request.") and not n.startswith(TEXT_PREFIX))


def guard_layout(schema: Any) -> dict[str, Any]:
    """What the guard needs from a :class:`~rlroute.features.schema.FeatureSchema`: the text dimensions
    (``range_exempt``), the clock and the routed features (``ignored``), per feature ``log1p(cap / unit)`` of a ``log`` feature,
    0 for a ``lin`` one (``log_norm``, for the range factor), and ``(index, value at the cap)`` of every
    ``log`` feature (``saturation``: the schema clips it there)."""
    return {"range_exempt": text_dims(schema.names),
            "ignored": tuple(sorted({i for i, n in enumerate(schema.names) if n.startswith(CLOCK_PREFIX)}
                                    | set(routed_dims(schema.names)))),
            "log_norm": np.array([np.log1p(f.cap / f.unit) if f.kind == "log" else 0.0 for f in schema.features]),
            "saturation": tuple((i, float(f.high)) for i, f in enumerate(schema.features) if f.kind == "log"),
            "window": window_dims(schema.names)}


@dataclass(slots=True)
class ObsStats:
    """Per-feature training statistics (float64 arrays of the observation's size) and where they came from."""

    mean: np.ndarray
    var: np.ndarray
    low: np.ndarray
    high: np.ndarray
    count: float
    source: str
    at_low: np.ndarray | None = None  # per feature: observations exactly at the minimum (None: not recorded)

    @classmethod
    def from_obs(cls, obs: np.ndarray, source: str) -> ObsStats:
        """Statistics of recorded observations ``float[n, dim]``."""
        x = np.asarray(obs, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"ObsStats.from_obs: expected float[n>0, dim] observations, got shape {x.shape}")
        low = x.min(axis=0)
        return cls(x.mean(axis=0), x.var(axis=0), low, x.max(axis=0), float(len(x)), source,
                   (x == low).sum(axis=0).astype(np.float64))

    @classmethod
    def from_norm(cls, norm: Any, count: float, source: str) -> ObsStats | None:
        """The training statistics of an :class:`~rlroute.export.graph.ObsNorm` with a recorded range, else None."""
        if not norm.enabled or norm.low is None or norm.high is None:
            return None
        return cls(np.asarray(norm.mean, np.float64), np.asarray(norm.var, np.float64),
                   np.asarray(norm.low, np.float64), np.asarray(norm.high, np.float64), float(count), source)

    def to_json(self) -> dict[str, Any]:
        """Manifest form."""
        d = {"mean": self.mean.tolist(), "var": self.var.tolist(), "low": self.low.tolist(),
             "high": self.high.tolist(), "count": self.count, "source": self.source}
        return d if self.at_low is None else {**d, "at_low": self.at_low.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObsStats:
        """Inverse of :meth:`to_json`; raises ``ValueError`` naming a missing or malformed key."""
        try:
            arrays = [np.asarray(d[k], dtype=np.float64) for k in ("mean", "var", "low", "high")]
        except KeyError as e:
            raise ValueError(f"ood.stats: missing {e.args[0]!r}") from e
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
            raise ValueError(f"ood.stats: mean/var/low/high must be equal-length lists, got {[a.shape for a in arrays]}")
        mean, var, low, high = arrays
        at_low = np.asarray(d["at_low"], dtype=np.float64) if d.get("at_low") is not None else None
        if at_low is not None and at_low.shape != mean.shape:
            raise ValueError(f"ood.stats: at_low must have one entry per feature ({mean.shape}), got {at_low.shape}")
        return cls(mean, var, low, high, float(d.get("count", 0.0)), str(d.get("source", "")), at_low)


@dataclass
class ShiftWindow:
    """The request window of the module doc: an exponentially weighted mean of the features ``dims`` over
    recent decisions, its largest standardised shift from the training ``mean`` relative to ``threshold``.

    The guard's one state: :meth:`update` folds in one decision and returns its score (> 1: the traffic has
    shifted), :meth:`reset` forgets (a fresh router, a new evaluation episode).
    """

    dims: tuple[int, ...]
    mean: np.ndarray  # training mean of each watched feature
    inv_sigma: np.ndarray  # 1 / sqrt(training variance + VAR_FLOOR)
    threshold: float = 1.0
    halflife: float = WINDOW_HALFLIFE

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.inv_sigma = np.asarray(self.inv_sigma, dtype=np.float64)
        if not (len(self.dims) == len(self.mean) == len(self.inv_sigma)) or not self.dims:
            raise ValueError(f"ShiftWindow: dims, mean and inv_sigma must be equal-length and non-empty, got "
                             f"{len(self.dims)}, {len(self.mean)}, {len(self.inv_sigma)}")
        if not (self.threshold > 0 and self.halflife > 0):
            raise ValueError(f"ShiftWindow: threshold and halflife must be > 0, got {self.threshold}, {self.halflife}")
        d = self.dims
        self._a = 1.0 - 0.5 ** (1.0 / self.halflife)
        self._neff = (2.0 - self._a) / self._a  # effective size of the weighted mean's window
        self._mean32 = self.mean.astype(np.float32)
        self._inv32 = (self.inv_sigma / self.threshold).astype(np.float32)
        self._pos = np.asarray(d, dtype=np.int64)
        self._last = int(self._pos.max())  # the highest index the kernel reads
        self.reset()

    @classmethod
    def fit(cls, stats: ObsStats, dims: tuple[int, ...], threshold: float = 1.0,
            halflife: float = WINDOW_HALFLIFE) -> ShiftWindow:
        """The window over ``dims`` with the training statistics ``stats``."""
        idx = list(dims)
        return cls(tuple(dims), stats.mean[idx], 1.0 / np.sqrt(stats.var[idx] + VAR_FLOOR), threshold, halflife)

    def reset(self) -> None:
        """Forget every decision seen."""
        self._m = np.zeros(len(self.dims), dtype=np.float32)
        self.n = 0
        self.score = 0.0  # the last update's score

    def update(self, obs: np.ndarray) -> float:
        """Fold in one raw observation; its window score relative to the threshold (> 1: shifted)."""
        window_update = _kernels()[1]
        if obs.ndim != 1 or obs.shape[0] <= self._last:  # the kernel reads by index
            raise ValueError(f"observation has shape {obs.shape}, the request window reads index {self._last}")
        self.n += 1
        obs = obs if obs.dtype == np.float32 else obs.astype(np.float32)  # the features' dtype
        # one compiled call on the float32 buffers; a plain mean until the window fills
        score = window_update(obs, self._pos, self._m, self._mean32, self._inv32,
                              np.float32(max(1.0 / self.n, self._a)))
        if self.n < self._neff:
            score *= math.sqrt(self.n / self._neff)
        self.score = score
        return score

    def scores(self, seq: np.ndarray) -> np.ndarray:
        """float64[n]: the scores of a fresh window fed ``seq`` (``float[n, dim]``, in decision order); the
        window's own state is left as it was."""
        saved = self._m.copy(), self.n, self.score
        self.reset()
        try:
            return np.array([self.update(x) for x in np.asarray(seq, dtype=np.float32)])
        finally:
            self._m, self.n, self.score = saved

    def to_json(self) -> dict[str, Any]:
        """Manifest form (the statistics are the guard's)."""
        return {"dims": list(self.dims), "threshold": self.threshold, "halflife": self.halflife}


@dataclass
class OodGuard:
    """Scores observations against training statistics (see the module docstring).

    Args:
        stats: training statistics.
        slices: ``block -> slice`` of the observation (the schema's).
        thresholds: per-block RMS-z threshold ``tau_b``, in :data:`BLOCKS` order.
        range_margin: widening of a ``lin`` feature's training range, as a fraction of its width.
        range_exempt: feature indices left out of the range check (drift only).
        ignored: feature indices left out of both scores (the clock, the routed features).
        log_norm: per feature ``log1p(cap / unit)`` of a ``log`` feature, 0 for ``lin`` (None: all ``lin``).
        range_factor: a ``log`` feature's range is widened by this factor in ``1 + x / unit``.
        saturation: ``(index, value at the cap)`` of the features the schema clips at a cap; one whose
            training maximum stays below its cap has its range end just below it (module doc).
        window: the request window (module doc; None: observations are scored one at a time only).
    """

    stats: ObsStats
    slices: dict[str, slice]
    thresholds: np.ndarray
    range_margin: float = RANGE_MARGIN
    range_exempt: tuple[int, ...] = ()
    ignored: tuple[int, ...] = ()
    log_norm: np.ndarray | None = None
    range_factor: float = RANGE_FACTOR
    saturation: tuple[tuple[int, float], ...] = ()
    window: ShiftWindow | None = None
    _buf: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        dim = len(self.stats.mean)
        self.thresholds = np.asarray(self.thresholds, dtype=np.float64)
        if self.thresholds.shape != (len(BLOCKS),) or not np.all(self.thresholds > 0):
            raise ValueError(f"OodGuard: thresholds must be {len(BLOCKS)} positive numbers, got {self.thresholds}")
        if self.range_factor <= 1:
            raise ValueError(f"OodGuard: range_factor must be > 1, got {self.range_factor}")
        log_norm = np.zeros(dim) if self.log_norm is None else np.asarray(self.log_norm, dtype=np.float64)
        if log_norm.shape != (dim,):
            raise ValueError(f"OodGuard: log_norm must have one entry per feature ({dim}), got {log_norm.shape}")
        self.log_norm = log_norm
        ignored = list(self.ignored)
        self._mean = self.stats.mean.astype(np.float32)
        self._inv_sigma = (1.0 / np.sqrt(self.stats.var + VAR_FLOOR)).astype(np.float32)
        self._inv_sigma[ignored] = 0.0
        # A recurring training minimum (an atom): an observation exactly on it deviates by 0 (module doc).
        atoms = np.zeros(dim, dtype=bool) if self.stats.at_low is None else self.stats.at_low >= ATOM_COUNT
        self._atom = np.where(atoms, self.stats.low, -np.inf).astype(np.float32)
        # mean z^2 of block b divided by tau_b^2, as one matmul: w[i, b] = 1 / (n_b tau_b^2) for i in b,
        # n_b counting the block's scored (not ignored) features.
        self._w = np.zeros((dim, len(BLOCKS)), dtype=np.float32)
        self._block_of = np.full(dim, -1, dtype=np.int64)
        scored = np.ones(dim, dtype=bool)
        scored[ignored] = False
        for b, name in enumerate(BLOCKS):
            s = self.slices[name]
            self._w[s, b] = scored[s] / (max(int(scored[s].sum()), 1) * self.thresholds[b] ** 2)
            self._block_of[s] = b
        if (self._block_of < 0).any():
            raise ValueError(f"OodGuard: blocks {BLOCKS} do not cover all {dim} features: {self.slices}")
        width = np.maximum(self.stats.high - self.stats.low, WIDTH_FLOOR)
        is_log = log_norm > 0
        margin = np.where(is_log, np.log(self.range_factor) / np.where(is_log, log_norm, 1.0), self.range_margin * width)
        lo, hi = self.stats.low - margin, self.stats.high + margin
        cap = np.full(dim, np.inf)
        for i, v in self.saturation:
            if not 0 <= i < dim:
                raise ValueError(f"OodGuard: saturation index {i} outside the {dim} features")
            cap[i] = v - SAT_EPS
        self.below_cap = self.stats.high < cap  # the cap was never reached in training: a saturated value is out
        hi = np.where(self.below_cap, np.minimum(hi, cap), hi)
        self._mid = ((hi + lo) / 2).astype(np.float32)
        self._inv_half = (1.0 / ((hi - lo) / 2)).astype(np.float32)
        self._inv_half[list(self.range_exempt) + ignored] = 0.0  # |x - mid| * 0 never exceeds 1
        self._buf = np.empty(dim, dtype=np.float32)
        self._zcap2 = np.float32(Z_CAP * Z_CAP)

    def check(self, obs: np.ndarray) -> tuple[bool, np.ndarray]:
        """One observation (float32): ``(out_of_distribution, drift2)`` with ``drift2[b] = drift_b ** 2``.

        The per-request path: the elementwise scores in one compiled call on a preallocated buffer
        (:func:`rlroute.export.ood_kernels.guard_scores`), one matmul for the three block scores, their
        maximum in Python.
        """
        guard_scores = _kernels()[0]
        z = self._buf
        if obs.shape != z.shape:  # the kernel reads by index: a wrong size must not pass unnoticed
            raise ValueError(f"observation has shape {obs.shape}, the guard expects {z.shape}")
        obs = obs if obs.dtype == np.float32 else obs.astype(np.float32)  # the features' dtype
        out = guard_scores(obs, self._mean, self._inv_sigma, self._atom, self._zcap2, self._mid, self._inv_half, z)
        drift2 = z @ self._w
        if out:
            return True, drift2
        d = drift2.tolist()  # three floats: Python's max beats ndarray.max's call overhead
        # ndarray.max is NaN when any block is: then no block counts as over its threshold
        return (max(d) > 1.0 and not any(map(math.isnan, d))), drift2

    def scores(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A batch ``float[n, dim]``: per-block ``drift`` (float64[n, 3]) and out-of-range flags (bool[n, 3])."""
        x = np.asarray(obs, dtype=np.float32)
        z = (x - self._mean) * self._inv_sigma
        z2 = np.where(x <= self._atom, np.float32(0.0), np.minimum(z * z, np.float32(Z_CAP * Z_CAP)))
        drift = np.sqrt((z2 @ self._w).astype(np.float64))
        out_f = self.out_of_range(x)
        out = np.zeros((len(x), len(BLOCKS)), dtype=bool)
        for b, name in enumerate(BLOCKS):
            out[:, b] = out_f[:, self.slices[name]].any(axis=1)
        return drift, out

    def out_of_range(self, obs: np.ndarray) -> np.ndarray:
        """bool[n, dim]: which features of a batch ``float[n, dim]`` lie outside their widened training range."""
        return np.asarray(np.abs(np.asarray(obs, dtype=np.float32) - self._mid) * self._inv_half > 1.0)

    def flags(self, obs: np.ndarray) -> np.ndarray:
        """bool[n]: which observations of a batch are out of distribution, read in decision order by a fresh
        request window when the guard has one (:meth:`ShiftWindow.scores`)."""
        drift, out = self.scores(obs)
        flagged = np.asarray((drift > 1.0).any(axis=1) | out.any(axis=1))
        if self.window is not None and len(drift):
            flagged |= self.window.scores(obs) > 1.0
        return np.asarray(flagged)

    def explain(self, obs: np.ndarray) -> str:
        """Why one observation is flagged: each block's drift and its out-of-range features (for logs)."""
        drift, out = self.scores(np.asarray(obs, dtype=np.float32)[None, :])
        parts = [f"{name} drift {drift[0, b]:.2f}x threshold" + (" (out of training range)" if out[0, b] else "")
                 for b, name in enumerate(BLOCKS)]
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``ood`` fields this guard is rebuilt from (calibration results are added beside)."""
        return {"blocks": {b: [self.slices[b].start, self.slices[b].stop] for b in BLOCKS},
                "thresholds": dict(zip(BLOCKS, self.thresholds.tolist(), strict=True)),
                "range_margin": self.range_margin, "range_exempt": list(self.range_exempt),
                "ignored": list(self.ignored), "range_factor": self.range_factor,
                "log_norm": np.asarray(self.log_norm).tolist(), "saturation": [list(p) for p in self.saturation],
                "var_floor": VAR_FLOOR, "width_floor": WIDTH_FLOOR, "z_cap": Z_CAP, "stats": self.stats.to_json(),
                **({"window": self.window.to_json()} if self.window is not None else {})}

    @classmethod
    def from_json(cls, d: dict[str, Any], scale: float = 1.0, range_margin: float | None = None,
                  range_factor: float | None = None) -> OodGuard:
        """Rebuild from a manifest's ``ood`` field; ``scale`` multiplies every threshold, ``range_margin`` and
        ``range_factor`` replace the calibrated ones. An older manifest is scored as it was calibrated: without
        ``ignored`` / ``log_norm`` every feature gets the ``lin`` margin, without ``saturation`` ranges widen past
        a cap, without ``window`` observations are scored one at a time. Raises ``ValueError`` naming what is
        missing or malformed."""
        try:
            slices = {b: slice(int(d["blocks"][b][0]), int(d["blocks"][b][1])) for b in BLOCKS}
            taus = np.array([float(d["thresholds"][b]) for b in BLOCKS]) * float(scale)
            margin = float(d["range_margin"] if range_margin is None else range_margin)
            factor = float(d.get("range_factor", RANGE_FACTOR) if range_factor is None else range_factor)
            exempt = tuple(int(i) for i in d.get("range_exempt", ()))
            ignored = tuple(int(i) for i in d.get("ignored", ()))
            log_norm = np.asarray(d["log_norm"], dtype=np.float64) if "log_norm" in d else None
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"manifest ood: missing or malformed {e}") from e
        try:
            sat = tuple((int(i), float(v)) for i, v in d.get("saturation", ()))
        except (TypeError, ValueError) as e:
            raise ValueError(f"manifest ood: saturation must be a list of [feature index, value at the cap] pairs, "
                             f"got {str(d.get('saturation'))[:80]} ({e})") from e
        stats = ObsStats.from_json(d["stats"])
        window = None
        if d.get("window") is not None:
            w = d["window"]
            try:
                dims = tuple(int(i) for i in w["dims"])
                if not all(0 <= i < len(stats.mean) for i in dims):
                    raise ValueError(f"a feature index outside the {len(stats.mean)} features")
                window = ShiftWindow.fit(stats, dims, float(w["threshold"]) * float(scale), float(w["halflife"]))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"manifest ood.window: expected {{dims: [feature index, ...], threshold: > 0, "
                                 f"halflife: > 0}}, got {str(w)[:80]} ({e})") from e
        return cls(stats, slices, taus, margin, exempt, ignored, log_norm, factor, sat, window)


def _taus(drift: np.ndarray, q: float) -> np.ndarray:
    """Per-block empirical ``1 - q`` quantile of the drift."""
    return np.asarray(np.quantile(drift, 1.0 - q, axis=0))


def _midgap(drift: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Move each block's threshold from its quantile up to the middle of the gap to the next larger fit-half
    score (the fit half's flags do not change)."""
    out = np.empty_like(taus)
    for b, t in enumerate(taus):
        above = drift[:, b][drift[:, b] > t * (1 + 1e-9)]
        # 1e-4 relative slack at least: the quantile is in float64, the guard's per-observation path in float32
        out[b] = max((t + above.min()) / 2 if above.size else t, t * (1 + 1e-4), 1e-6)
    return out


def _fpr(drift: np.ndarray, out: np.ndarray, taus: np.ndarray) -> float:
    return float(((drift > taus).any(axis=1) | out.any(axis=1)).mean())


def calibrate(stats: ObsStats, slices: dict[str, slice], fit: np.ndarray, holdout: np.ndarray,
              target_fpr: float = TARGET_FPR, range_margin: float = RANGE_MARGIN,
              range_exempt: tuple[int, ...] = (), ignored: tuple[int, ...] = (),
              log_norm: np.ndarray | None = None, range_factor: float = RANGE_FACTOR,
              saturation: tuple[tuple[int, float], ...] = (),
              window: tuple[int, ...] = ()) -> tuple[OodGuard, dict[str, Any]]:
    """Choose per-block thresholds on ``fit`` (validation observations) and measure ``holdout``'s false positives.

    ``range_exempt``, ``ignored``, ``log_norm``, ``saturation`` and ``window`` describe the schema
    (:func:`guard_layout`); the margins are widened without the saturation limit (no margin reaches past a
    cap), which then counts in the thresholds' joint false-positive rate (its share of the fit half:
    ``saturated_fit``). With ``window`` features, both halves are read in recording order (decision order)
    and the request window's threshold is ``WINDOW_MARGIN`` times the fit half's largest window score; the
    holdout's false-positive rate counts its window refusals too.

    Returns:
        The guard and the calibration record for the manifest (``fpr_fit``, ``fpr_holdout``, per-block
        holdout rates, the quantile used, sizes, whether the holdout met ``target_fpr``).
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"ood target_fpr: expected a rate in (0, 1), got {target_fpr}")
    if len(fit) < 50 or len(holdout) < 50:
        raise ValueError(f"ood calibration needs >= 50 observations per half, got {len(fit)} and {len(holdout)}")
    ones = np.ones(len(BLOCKS))
    margin, factor = float(range_margin), float(range_factor)
    while True:  # widen the range margins until they alone stay within a quarter of the budget
        raw = OodGuard(stats, slices, ones, margin, range_exempt, ignored, log_norm, factor)
        drift, out = raw.scores(fit)
        if out.any(axis=1).mean() <= target_fpr / 4 or margin > 64:
            break
        margin, factor = margin * 2, factor * 2
    unsat = out.any(axis=1)
    drift, out = OodGuard(stats, slices, ones, margin, range_exempt, ignored, log_norm, factor, saturation).scores(fit)
    lo, hi = 0.0, target_fpr  # bisect the per-block tail mass q (joint FPR is monotone in q)
    for _ in range(40):
        q = (lo + hi) / 2
        if _fpr(drift, out, _taus(drift, q)) <= target_fpr / 2:
            lo = q
        else:
            hi = q
    taus = _midgap(drift, _taus(drift, lo))
    win, win_record = None, {}
    if window:
        fit_max = float(ShiftWindow.fit(stats, window).scores(fit).max())
        win = ShiftWindow.fit(stats, window, WINDOW_MARGIN * max(fit_max, 1e-6))
        h_win = win.scores(holdout) > 1.0
        win_record = {"window": {"fit_max": fit_max, "threshold": win.threshold, "halflife": win.halflife,
                                 "fpr_holdout": float(h_win.mean())}}
    guard = OodGuard(stats, slices, taus, margin, range_exempt, ignored, log_norm, factor, saturation, win)
    h_drift, h_out = guard.scores(holdout)
    f_drift, f_out = guard.scores(fit)
    fpr_hold = _fpr(h_drift, h_out, ones) if win is None else \
        float(((h_drift > 1).any(axis=1) | h_out.any(axis=1) | h_win).mean())
    record = {
        "target_fpr": target_fpr, "quantile_tail": lo, "range_margin": margin, "range_factor": factor,
        "n_fit": int(len(fit)), "n_holdout": int(len(holdout)),
        "saturated_fit": float((out.any(axis=1) & ~unsat).mean()),
        "fpr_fit": _fpr(f_drift, f_out, ones), "fpr_holdout": fpr_hold,
        "fpr_holdout_by_block": {b: float(((h_drift[:, i] > 1) | h_out[:, i]).mean()) for i, b in enumerate(BLOCKS)},
        "meets_target": fpr_hold <= target_fpr, **win_record,
    }
    return guard, record


def fallback_rate(manifest: dict[str, Any], obs: np.ndarray, scale: float = 1.0) -> dict[str, Any]:
    """Share of ``obs`` (raw observations ``float[n, dim]``) the exported policy's OOD guard sends to the fallback.

    For reports: every robustness figure states this rate beside it. ``manifest`` is an exported folder's
    ``manifest.json`` (:func:`rlroute.export.manifest.read_manifest`); a manifest without ``ood`` (exported
    before the guard existed) has no guard: rate 0 and ``guarded: False``. ``obs`` is read in decision order
    by the request window (a fresh one), when the guard has it.

    Returns:
        ``{guarded, n, rate, by_block: {block: rate}, mean_drift: {block: mean drift_b}, window: rate}``.
    """
    x = np.asarray(obs, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"fallback_rate: expected observations float[n, dim], got shape {x.shape}")
    if not manifest.get("ood"):
        return {"guarded": False, "n": int(len(x)), "rate": 0.0, "by_block": {}, "mean_drift": {}}
    guard = OodGuard.from_json(manifest["ood"], scale=scale)
    if x.shape[1] != len(guard.stats.mean):
        raise ValueError(f"fallback_rate: observations have {x.shape[1]} features, the policy {len(guard.stats.mean)}")
    drift, out = guard.scores(x)
    win = guard.window.scores(x) > 1.0 if guard.window is not None and len(x) else np.zeros(len(x), dtype=bool)
    flagged = (drift > 1).any(axis=1) | out.any(axis=1) | win  # guard.flags(x), its parts kept for the report
    return {"guarded": True, "n": int(len(x)), "rate": float(flagged.mean()) if len(x) else 0.0,
            "by_block": {b: float(((drift[:, i] > 1) | out[:, i]).mean()) for i, b in enumerate(BLOCKS)},
            "mean_drift": {b: float(drift[:, i].mean()) for i, b in enumerate(BLOCKS)},
            "window": float(win.mean()) if len(x) else 0.0}
