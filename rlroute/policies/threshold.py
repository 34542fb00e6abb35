"""A RouteLLM-style threshold router: a classifier predicts whether the large model is needed.

Label: ``y = 1`` when the large model's answer is acceptable and the small model's is not (the large
model is *needed*), taken from the quality model's draws on the workload's **training split** (for
labelled prompt sets these are the dataset's per-model correctness labels). Model: L2-regularised
logistic regression on hashed n-grams (:mod:`rlroute.policies.textfeat`), fitted with SciPy's L-BFGS.
Route: large when P(needed) > threshold, else small. The threshold is either given or calibrated so that a
target share of training requests goes to the large model (RouteLLM calibrates thresholds the same way,
by a target share of strong-model calls).

Training is :func:`train_threshold_model`; the fitted weights are cached in a ``.npz`` file keyed by the
workload/quality config, so repeated evaluations reuse them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import expit

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import choose_allowed
from rlroute.policies.textfeat import FEATURE_VERSION, cached_row, featurize
from rlroute.types import Action, Request

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ThresholdModel:
    """Fitted logistic-regression weights and the training-set scores (for threshold calibration)."""

    weights: np.ndarray  # (n_hash + N_NUMERIC,)
    n_hash: int
    train_scores: np.ndarray  # P(needed) on the training requests
    positive_rate: float  # share of training requests that needed the large model

    def predict(self, x: sp.csr_matrix) -> np.ndarray:
        """P(large needed) for each row of ``x``."""
        return np.asarray(expit(x @ self.weights), dtype=np.float64)

    def save(self, path: Path) -> None:
        """Write the model to ``path`` (``.npz``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, weights=self.weights, n_hash=self.n_hash, train_scores=self.train_scores,
                 positive_rate=self.positive_rate, version=FEATURE_VERSION)

    @classmethod
    def load(cls, path: Path) -> ThresholdModel:
        """Read a model written by :meth:`save`; errors name the file and what is wrong."""
        try:
            data = np.load(path)
            version = int(data["version"])
            model = cls(data["weights"], int(data["n_hash"]), data["train_scores"], float(data["positive_rate"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a threshold-router model file ({exc})") from exc
        if version != FEATURE_VERSION:
            raise ValueError(f"{path}: feature version {version}, this code expects {FEATURE_VERSION}; retrain")
        return model


def fit_logistic(x: sp.csr_matrix, y: np.ndarray, l2: float = 1.0, max_iter: int = 200) -> np.ndarray:
    """Weights minimising mean log-loss + ``l2``/(2n)·‖w‖² (bias, the first numeric column, included)."""
    n = x.shape[0]
    yf = y.astype(np.float64)

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        # log(1 + e^z) - y z, computed stably.
        loss = float(np.sum(np.logaddexp(0.0, z) - yf * z)) / n + 0.5 * l2 * float(w @ w) / n
        grad = (x.T @ (expit(z) - yf)) / n + l2 * w / n
        return loss, np.asarray(grad, dtype=np.float64)

    res = minimize(loss_grad, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return np.asarray(res.x, dtype=np.float64)


def needed_labels(requests: list[Request]) -> np.ndarray:
    """1 where the large model's answer is acceptable and the small model's is not."""
    y = np.zeros(len(requests), dtype=np.int8)
    for k, req in enumerate(requests):
        if req.quality is None:
            raise ValueError(f"request {req.id}: no quality draw to label the threshold router with")
        y[k] = int(req.quality.ok[Action.LARGE] and not req.quality.ok[Action.SMALL])
    return y


def training_requests(cfg: Any, split: str = "train", max_requests: int = 4000, seed: int = 0) -> list[Request]:
    """The first ``max_requests`` requests of ``cfg.workload``'s ``split``, each with a quality draw."""
    from hydra.utils import instantiate

    workload = instantiate(cfg.workload, split=split)
    quality = instantiate(cfg.quality)
    rng = np.random.default_rng(seed)
    out: list[Request] = []
    for req in workload.requests(rng):
        if req.quality is None:
            req.quality = quality.draw(req, rng)
        out.append(req)
        if len(out) >= max_requests:
            break
    if not out:
        raise ValueError(f"workload {cfg.workload.get('_target_')} split={split!r} yielded no requests to train on")
    return out


def _cache_key(cfg: Any, max_requests: int, n_hash: int, l2: float, seed: int) -> str:
    from omegaconf import OmegaConf

    payload = {
        "workload": OmegaConf.to_container(cfg.workload, resolve=True),
        "quality": OmegaConf.to_container(cfg.quality, resolve=True),
        "n": max_requests, "n_hash": n_hash, "l2": l2, "seed": seed, "v": FEATURE_VERSION,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_threshold_model(
    cfg: Any,
    cache_dir: str | Path = "outputs/cache",
    max_requests: int = 4000,
    n_hash: int = 2**14,
    l2: float = 1.0,
    seed: int = 0,
) -> ThresholdModel:
    """Train (or load from the cache) the classifier on ``cfg``'s training split.

    Args:
        cfg: a composed rlroute config with ``workload`` and ``quality`` groups.
        cache_dir: where fitted models are cached, keyed by the workload/quality config and these args.
        max_requests: training requests drawn from the training split.
        n_hash: hashed-feature dimension.
        l2: L2 regularisation strength.
        seed: seeds the workload stream and quality draws of the training set.
    """
    path = Path(cache_dir) / f"threshold_{_cache_key(cfg, max_requests, n_hash, l2, seed)}.npz"
    if path.exists():
        log.info("threshold router: loading cached model %s", path)
        return ThresholdModel.load(path)
    requests = training_requests(cfg, "train", max_requests, seed)
    x, y = featurize(requests, n_hash), needed_labels(requests)
    weights = fit_logistic(x, y, l2)
    model = ThresholdModel(weights, n_hash, np.asarray(expit(x @ weights)), float(y.mean()))
    model.save(path)
    log.info("threshold router: trained on %d requests (%.1f%% need large), saved %s", len(y), 100 * y.mean(), path)
    return model


class ThresholdRouter(Policy):
    """Large when the classifier's P(large needed) exceeds the threshold, else small.

    Args:
        threshold: fixed threshold on P(needed); ``None`` calibrates it from ``large_share``.
        large_share: target share of training requests routed large when ``threshold`` is ``None``.
        model_path: a saved :class:`ThresholdModel`; ``None`` trains on demand in :meth:`prepare`.
        cache_dir, max_train_requests, n_hash, l2: passed to :func:`train_threshold_model`.
    """

    name = "threshold"

    def __init__(
        self,
        threshold: float | None = None,
        large_share: float = 0.3,
        model_path: str | None = None,
        cache_dir: str = "outputs/cache",
        max_train_requests: int = 4000,
        n_hash: int = 2**14,
        l2: float = 1.0,
    ) -> None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold.threshold: expected a probability in [0, 1] or null, got {threshold}")
        if not 0.0 <= large_share <= 1.0:
            raise ValueError(f"threshold.large_share: expected a share in [0, 1], got {large_share}")
        self.threshold = threshold
        self.large_share = large_share
        self.cache_dir, self.max_train_requests, self.n_hash, self.l2 = cache_dir, max_train_requests, n_hash, l2
        self.model: ThresholdModel | None = ThresholdModel.load(Path(model_path)) if model_path else None
        if self.model is not None:
            self._calibrate()

    def prepare(self, cfg: Any) -> None:
        """Train or load the classifier for ``cfg`` (the evaluator calls this before the first episode)."""
        if self.model is None:
            self.model = train_threshold_model(cfg, self.cache_dir, self.max_train_requests, self.n_hash, self.l2,
                                               seed=int(cfg.get("seed", 0)))
            self._calibrate()

    def _calibrate(self) -> None:
        assert self.model is not None
        if self.threshold is None:
            self.threshold = float(np.quantile(self.model.train_scores, 1.0 - self.large_share))

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def score(self, ctx: DecisionContext) -> float:
        """P(large model needed) for ``ctx.request``; the evaluator sweeps thresholds over it (APGR)."""
        if self.model is None:
            raise RuntimeError("threshold router has no model: pass model_path or call prepare(cfg) first")
        return float(self.model.predict(cached_row(ctx.request, self.model.n_hash))[0])

    def act(self, ctx: DecisionContext) -> Action:
        """Large above the threshold, small otherwise (moved when the pool cannot serve)."""
        p_needed = self.score(ctx)  # raises without a model; a model always has a threshold (_calibrate)
        preferred = Action.LARGE if p_needed > float(self.threshold or 0.0) else Action.SMALL
        return choose_allowed(preferred, ctx)
