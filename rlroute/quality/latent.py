"""Latent-difficulty quality model: an item-response model calibrated to a target joint outcome table.

For request ``r`` and model ``m`` in {small, large}::

    P(ok | m, r) = sigmoid(a_m - d_r)
    d_r = tau * (sqrt(w) * z_r + sqrt(1 - w) * eps_r)

``z_r`` is the request's observable difficulty (:func:`~rlroute.quality.difficulty.observable_score`),
standardised on a reference sample of the workload; ``eps_r ~ N(0, 1)`` is the part no router can see,
fixed per request (a hash of its prompt text, or of its id and length for text-less traces) so the same
prompt is always equally hard; ``w`` = ``observable_share`` (assumption). Small and large outcomes are
conditionally independent given ``d_r``; their positive correlation comes from the shared difficulty.

The abilities ``a_small``, ``a_large`` and the difficulty scale ``tau`` are fitted (three equations,
three unknowns, Gauss-Hermite quadrature over ``eps``) so that, over the reference sample, the expected
joint (small, large) outcome table equals ``target``. Default target: RouteLLM's labelled MMLU joint
counts (Mixtral-8x7B = small, GPT-4-1106 = large), see :data:`MMLU_JOINT_COUNTS`.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import least_squares

from rlroute.quality.difficulty import (
    DEFAULT_CATEGORY_DIFFICULTY,
    DEFAULT_WEIGHTS,
    observable_score,
    request_properties,
)
from rlroute.quality.hybrid import HybridMode, PlanAndExecute
from rlroute.types import QualityDraw, Request
from rlroute.workload.base import Workload
from rlroute.workload.tokens import TextMemo, stable_hash

log = logging.getLogger(__name__)

# Joint outcome counts of the 11,447 prompts in ../shared/data/routellm/mmlu/mmlu_*.csv (RouteLLM
# evaluation data, lm-sys/RouteLLM, Apache-2.0), small = mistralai/Mixtral-8x7B-Instruct-v0.1,
# large = gpt-4-1106-preview: small 69.1 % and large 82.9 % correct. Recompute with
# ``RouteLLMPrompts(exclude_contaminated=False).all_conversations()`` and counting the label pairs
# (tests/test_quality_latent.py::test_mmlu_joint_counts_match_data does exactly this).
MMLU_JOINT_COUNTS: dict[str, int] = {"both": 7383, "small_only": 531, "large_only": 2109, "neither": 1424}
_CELLS = ("both", "small_only", "large_only", "neither")
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(32)  # probabilists' Hermite: E[f(eps)], eps ~ N(0,1)
_GH_W = _GH_W / _GH_W.sum()


# Process-level memo of eps_r by (prompt, salt), a pure function of its key; bounded (TextMemo).
_HIDDEN_MEMO: TextMemo[tuple[str, int], float] = TextMemo()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def joint_probs(counts: Mapping[str, float]) -> dict[str, float]:
    """Normalise a joint table ``{both, small_only, large_only, neither}`` to probabilities."""
    missing = [c for c in _CELLS if c not in counts]
    if missing:
        raise ValueError(f"target joint table needs keys {_CELLS}, missing {missing}")
    vals = [float(counts[c]) for c in _CELLS]
    if min(vals) < 0 or sum(vals) <= 0:
        raise ValueError(f"target joint counts must be >= 0 and not all 0, got {dict(counts)}")
    total = sum(vals)
    return {c: v / total for c, v in zip(_CELLS, vals, strict=True)}


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _normal_from_hash(h: int) -> float:
    """A standard normal from a 63-bit hash (Box-Muller on its two 31-bit halves)."""
    u1 = ((h & 0x7FFFFFFF) + 1) / 2**31
    u2 = ((h >> 31) & 0x7FFFFFFF) / 2**31
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


class LatentDifficultyQuality:
    """Item-response quality model (see module docstring).

    Args:
        target: joint counts or probabilities ``{both, small_only, large_only, neither}``.
        observable_share: share ``w`` of difficulty variance a router can observe (assumption).
        weights: structural-cue weights (see :data:`~rlroute.quality.difficulty.DEFAULT_WEIGHTS`).
        category_difficulty: category-substring offsets
            (see :data:`~rlroute.quality.difficulty.DEFAULT_CATEGORY_DIFFICULTY`).
        hybrid: the hybrid mode (default plan-and-execute).
        reference: workload whose requests set the observable-score scale and the fit; ``None`` uses
            the built-in synthetic workload. Configs pass the run's own workload.
        reference_requests: how many reference requests to fit on.
        reference_seed: seed of the reference stream.
        seed: salt of the per-request hidden difficulty (``eps_r``).
    """

    def __init__(
        self,
        target: Mapping[str, float] | None = None,
        observable_share: float = 0.5,
        weights: Mapping[str, float] | None = None,
        category_difficulty: Mapping[str, float] | None = None,
        hybrid: HybridMode | None = None,
        reference: Workload | None = None,
        reference_requests: int = 3000,
        reference_seed: int = 0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= observable_share <= 1.0:
            raise ValueError(f"observable_share must be in [0, 1], got {observable_share}")
        self.target = joint_probs(target or MMLU_JOINT_COUNTS)
        self.observable_share = float(observable_share)
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.categories = dict(
            DEFAULT_CATEGORY_DIFFICULTY if category_difficulty is None else category_difficulty
        )
        self.hybrid: HybridMode = hybrid or PlanAndExecute()
        self.seed = int(seed)
        self.a_small = self.a_large = 0.0
        self.tau = 1.0
        self._mu, self._sd = 0.0, 1.0
        if reference is None:
            reference = _default_reference()
        elif (getattr(reference, "max_requests", None) or reference_requests) < reference_requests:
            # A short run (e.g. workload.max_requests=100) must not starve the fit: lift the cap on a copy.
            reference = copy.copy(reference)
            reference.max_requests = None  # type: ignore[attr-defined]
        sample = list(
            itertools.islice(reference.requests(np.random.default_rng(reference_seed)), reference_requests)
        )
        self.calibrate(sample)

    # -- difficulty ----------------------------------------------------------------------------------
    def observable(self, request: Request) -> float:
        """Standardised observable difficulty ``z_r``."""
        raw = observable_score(request_properties(request), self.weights, self.categories)
        return (raw - self._mu) / self._sd

    def hidden(self, request: Request) -> float:
        """The request's fixed unobservable difficulty ``eps_r ~ N(0, 1)``."""
        if request.prompt:
            # Hashing a multi-kB prompt costs ~30 us; a prompt recurs across resets, so memoise.
            key = (request.prompt, self.seed)
            eps = _HIDDEN_MEMO.get(key)
            if eps is None:
                eps = _normal_from_hash(stable_hash(request.prompt, self.seed))
                _HIDDEN_MEMO.put(key, eps, len(request.prompt))
            return eps
        key_s = f"{request.id}/{request.input_len}/{request.blocks[:1]}"
        return _normal_from_hash(stable_hash(key_s, self.seed))

    def difficulty(self, request: Request) -> float:
        """``d_r`` in logits."""
        w = self.observable_share
        return self.tau * (
            math.sqrt(w) * self.observable(request) + math.sqrt(1.0 - w) * self.hidden(request)
        )

    # -- calibration ---------------------------------------------------------------------------------
    def _expected(self, z: np.ndarray, a_s: float, a_l: float, tau: float) -> dict[str, float]:
        w = self.observable_share
        d = tau * (math.sqrt(w) * z[:, None] + math.sqrt(1.0 - w) * _GH_X[None, :])
        ps, pl = _sigmoid(a_s - d), _sigmoid(a_l - d)
        both = float(((ps * pl) @ _GH_W).mean())
        p_s, p_l = float((ps @ _GH_W).mean()), float((pl @ _GH_W).mean())
        return {
            "both": both,
            "small_only": p_s - both,
            "large_only": p_l - both,
            "neither": 1 - p_s - p_l + both,
        }

    def calibrate(self, requests: Sequence[Request]) -> dict[str, float]:
        """Fit ``a_small``, ``a_large``, ``tau`` on ``requests``; returns the fitted expected joint."""
        if len(requests) < 50:
            raise ValueError(f"calibration needs at least 50 reference requests, got {len(requests)}")
        raw = np.array(
            [observable_score(request_properties(r), self.weights, self.categories) for r in requests]
        )
        self._mu, self._sd = float(raw.mean()), float(raw.std()) or 1.0
        z = (raw - self._mu) / self._sd
        t = self.target
        t_s, t_l = t["both"] + t["small_only"], t["both"] + t["large_only"]

        def resid(x: np.ndarray) -> np.ndarray:
            e = self._expected(z, x[0], x[1], math.exp(x[2]))
            return np.array(
                [e["both"] + e["small_only"] - t_s, e["both"] + e["large_only"] - t_l, e["both"] - t["both"]]
            )

        fit = least_squares(resid, x0=[_logit(t_s), _logit(t_l), 0.0], xtol=1e-12, ftol=1e-12, gtol=1e-12)
        self.a_small, self.a_large, self.tau = float(fit.x[0]), float(fit.x[1]), float(math.exp(fit.x[2]))
        achieved = self._expected(z, self.a_small, self.a_large, self.tau)
        err = max(abs(achieved[c] - t[c]) for c in _CELLS)
        if err > 1e-3:
            log.warning("latent quality fit is off its target by %.4f (target %s, got %s)", err, t, achieved)
        self.fit_error = err
        return achieved

    def expected_joint(self, requests: Iterable[Request]) -> dict[str, float]:
        """Mean over ``requests`` of each joint cell's probability (no sampling noise)."""
        cells = np.zeros(4)
        n = 0
        for r in requests:
            p_l, p_s, _ = self.probs(r)
            cells += (p_s * p_l, p_s * (1 - p_l), p_l * (1 - p_s), (1 - p_s) * (1 - p_l))
            n += 1
        return {c: float(v / max(n, 1)) for c, v in zip(_CELLS, cells, strict=True)}

    # -- QualityModel --------------------------------------------------------------------------------
    def probs(self, request: Request) -> tuple[float, float, float]:
        """P(acceptable) for large, small, hybrid."""
        d = self.difficulty(request)
        p_l = 1.0 / (1.0 + math.exp(d - self.a_large))
        p_s = 1.0 / (1.0 + math.exp(d - self.a_small))
        return p_l, p_s, self.hybrid.prob(p_l, p_s)

    def draw(self, request: Request, rng: np.random.Generator) -> QualityDraw:
        """Joint outcomes: small and large independent given ``d_r``; hybrid from the hybrid mode."""
        p = self.probs(request)
        u = rng.random(2)
        ok_l, ok_s = bool(u[0] < p[0]), bool(u[1] < p[1])
        ok_h, escalated = self.hybrid.draw(ok_l, ok_s, rng)
        return QualityDraw(p=p, ok=(ok_l, ok_s, ok_h), escalated=escalated)


def _default_reference() -> Workload:
    """The built-in synthetic workload (no external data), as in ``conf/workload/synthetic.yaml``."""
    from rlroute.workload.arrivals import PoissonArrivals
    from rlroute.workload.compose import PromptWorkload
    from rlroute.workload.synthetic import SyntheticPrompts

    return PromptWorkload(SyntheticPrompts(), PoissonArrivals(20.0), with_token_ids=False, name="synthetic")
