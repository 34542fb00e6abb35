"""Metrics of one evaluation episode, computed from its per-request records.

A record is a dict with at least: ``action`` (0 large, 1 small, 2 hybrid), ``ok_large``/``ok_small``/
``ok_hybrid`` (the quality draw of every action, known in the simulator), ``quality_ok`` (what the
completion delivered; failed requests count as not acceptable), ``failed``, ``ttft``, ``tpot``, ``e2e``
(seconds), ``cost``, ``prompt_tokens``, ``cached_tokens`` and ``score`` (a router's P(large needed), NaN
for policies without one).

RouteLLM metrics (Ong et al., 2024, and ``routellm/evals/evaluate.py``):

* ``PGR = (q − q_weak) / (q_strong − q_weak)``, with q_weak / q_strong the quality of sending the *same*
  requests all to small / all to large (from the per-action draws, so all-small is exactly 0 and all-large
  exactly 1 by construction).
* APGR — one definition, RouteLLM's (``routellm/evals/evaluate.py``, ``apgr_metric``; thresholds as in
  ``routellm/evals/benchmarks.py``, ``MMLU.evaluate``): a policy with a *score* (its estimate that the strong
  model is needed) is swept over thresholds at the score's quantiles (``pd.qcut`` bins, duplicates kept;
  ``score >= t`` goes strong, the last threshold ``score > max`` sends none), each threshold giving a
  (strong-call share, quality) point with quality = the large draw where routed strong, else the small
  draw. APGR = ``(AUC − AUC_weak) / (AUC_strong − AUC_weak)``, trapezoids over the points' share range,
  AUC_weak / AUC_strong the flat all-small / all-large qualities over the same range. Scores: the threshold
  router's P(large needed), a learned policy's P(large) + P(hybrid) from its action probabilities
  (``SB3Policy.score``, ``OnnxPolicy.score``), the supervised router's predicted advantage. A policy
  without a score (fixed rules, heuristics, oracles) has one operating point and no curve: its APGR is
  NaN and its operating point is reported as ``pgr`` at ``strong_share`` — never under the name APGR.
* CPT(x %): the smallest strong-call share at which the swept curve reaches PGR x, interpolated linearly
  (as RouteLLM's ``np.interp``); NaN without a curve or when the curve never reaches x.
* Strong-model calls count large and hybrid (hybrid calls the large model for its plan).

These ratios are computed per episode (``episode_metrics``) and, for the summary, on the pooled requests
of all test windows (``routing_metrics`` over the pooled arrays, as RouteLLM computes them on the whole
set): a per-episode ratio explodes when that episode's gap ``q_strong − q_weak`` is near zero, so the
pooled value with a bootstrap interval clustered by test window is the reported one
(``rlroute.eval.run.summarise``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlroute.types import Action

Record = dict[str, Any]
Curve = Sequence[float] | np.ndarray
PERCENTILES = (50, 90, 99)
SWEEP_BINS = 20  # quantile bins of the threshold sweep (RouteLLM uses --num-results 10; finer here)


def pgr(q: float, q_weak: float, q_strong: float) -> float:
    """Performance gap recovered; NaN when the two models perform the same."""
    gap = q_strong - q_weak
    return float((q - q_weak) / gap) if abs(gap) > 1e-12 else float("nan")


def apgr(shares: Curve, qualities: Curve, q_weak: float, q_strong: float) -> float:
    """RouteLLM's APGR of a swept (strong-call share, quality) curve; NaN without a curve (module doc)."""
    x, q = _sorted_curve(shares, qualities)
    span = float(x[-1] - x[0])
    if span <= 1e-12:
        return float("nan")  # one operating point: no area to compare (report its PGR instead)
    auc = float(np.trapezoid(q, x))
    return pgr(auc / span, q_weak, q_strong)  # (AUC − q_weak·span) / (q_strong·span − q_weak·span)


def cpt(shares: Curve, qualities: Curve, q_weak: float, q_strong: float, level: float) -> float:
    """Call-performance threshold: least strong-call share where the curve reaches PGR ``level`` (NaN if
    never, or without a curve)."""
    x, q = _sorted_curve(shares, qualities)
    if x.size == 1 or float(x[-1] - x[0]) <= 1e-12:
        return float("nan")
    target = q_weak + level * (q_strong - q_weak)
    if q[0] >= target:
        return float(x[0])
    for k in range(1, x.size):
        if q[k] >= target:
            # Linear interpolation inside the segment where the curve crosses the target.
            frac = (target - q[k - 1]) / (q[k] - q[k - 1]) if q[k] != q[k - 1] else 0.0
            return float(x[k - 1] + frac * (x[k] - x[k - 1]))
    return float("nan")


def _sorted_curve(shares: Curve, qualities: Curve) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(shares, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    if x.size == 0 or x.shape != q.shape:
        raise ValueError(f"curve: expected equal, non-empty shares and qualities, got {x.shape} and {q.shape}")
    order = np.argsort(x, kind="stable")
    return x[order], q[order]


def threshold_sweep(
    scores: np.ndarray, ok_large: np.ndarray, ok_small: np.ndarray, n_bins: int = SWEEP_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """RouteLLM's sweep: thresholds at the ``n_bins``-quantiles of ``scores``; ``score >= t`` goes large
    (the last threshold: ``score > t``, so none), the rest small. Ties move together, as a threshold does.

    Returns the (strong-call share, quality) points sorted by share.
    """
    n = scores.size
    if n == 0:
        raise ValueError("threshold_sweep: no requests")
    if n_bins < 1:
        raise ValueError(f"threshold_sweep: n_bins must be >= 1, got {n_bins}")
    thresholds = np.quantile(scores, np.linspace(0.0, 1.0, n_bins + 1))
    large, small = ok_large.astype(np.float64), ok_small.astype(np.float64)
    strong = scores[None, :] >= thresholds[:, None]
    strong[-1] = scores > thresholds[-1]
    shares = strong.mean(axis=1)
    quality = np.where(strong, large[None, :], small[None, :]).mean(axis=1)
    order = np.argsort(shares, kind="stable")
    return shares[order], quality[order]


ROUTING_KEYS = ("pgr", "apgr", "cpt50", "cpt80")


def routing_metrics(action: np.ndarray, ok: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """RouteLLM's metrics of one set of decisions (module doc).

    Args:
        action: ``int[n]`` chosen actions.
        ok: ``bool[n, 3]`` drawn outcome of every action for each request.
        scores: ``float[n]`` the policy's scores (all finite → RouteLLM's threshold sweep gives APGR / CPT;
            otherwise the policy has one operating point: ``pgr`` and ``strong_share``, APGR / CPT NaN).
    """
    n = action.size
    q_weak, q_strong = float(ok[:, Action.SMALL].mean()), float(ok[:, Action.LARGE].mean())
    q_policy = float(ok[np.arange(n), action].mean())
    strong_share = float(np.isin(action, (Action.LARGE, Action.HYBRID)).mean())
    if np.isfinite(scores).all():
        xs, qs = threshold_sweep(scores, ok[:, Action.LARGE], ok[:, Action.SMALL])
    else:
        xs, qs = np.array([strong_share]), np.array([q_policy])
    return {
        "quality_drawn": q_policy,
        "q_weak": q_weak,
        "q_strong": q_strong,
        "strong_share": strong_share,
        "pgr": pgr(q_policy, q_weak, q_strong),
        "apgr": apgr(xs, qs, q_weak, q_strong),
        "cpt50": cpt(xs, qs, q_weak, q_strong, 0.5),
        "cpt80": cpt(xs, qs, q_weak, q_strong, 0.8),
    }


def pooled_routing_arrays(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(action, ok, scores)`` arrays of ``records`` for :func:`routing_metrics`."""
    action = np.array([int(r["action"]) for r in records])
    ok = np.array([[r["ok_large"], r["ok_small"], r["ok_hybrid"]] for r in records], dtype=bool)
    scores = np.array([r["score"] for r in records], dtype=np.float64)
    return action, ok, scores


def _pct(values: np.ndarray, p: float) -> float:
    return float(np.percentile(values, p)) if values.size else float("nan")


def episode_metrics(
    records: Sequence[Record],
    slo_ttft: float | None = None,
    slo_tpot: float | None = None,
    slo_ttft_hybrid: float | None = None,
    reference_cost: float | None = None,
) -> dict[str, float]:
    """All per-episode metrics of the module doc from one episode's records.

    Args:
        records: one episode's per-request records.
        slo_ttft: TTFT SLO in seconds (None: not checked).
        slo_tpot: TPOT SLO in seconds (None: not checked).
        slo_ttft_hybrid: TTFT SLO for hybrid requests, whose TTFT includes the plan (None: ``slo_ttft``),
            the same target the reward applies (``reward.slo_ttft_hybrid_s``).
        reference_cost: total cost of the all-large policy on the same seed, for ``cost_saving``.
    """
    n = len(records)
    if n == 0:
        raise ValueError("episode_metrics: no records (the episode made no decisions)")
    col = lambda key: np.array([r[key] for r in records], dtype=np.float64)  # noqa: E731
    action = np.array([int(r["action"]) for r in records])
    ok = np.stack([col("ok_large"), col("ok_small"), col("ok_hybrid")], axis=1)
    failed = np.array([bool(r["failed"]) for r in records])
    delivered = np.array([bool(r["quality_ok"]) and not bool(r["failed"]) for r in records], dtype=np.float64)
    done = ~failed
    ttft, tpot, e2e = col("ttft")[done], col("tpot")[done], col("e2e")[done]
    cost_total = float(col("cost").sum())

    routing = routing_metrics(action, ok, col("score"))
    slo_ok = done.copy()
    if slo_ttft is not None:
        target = np.full(n, slo_ttft)
        if slo_ttft_hybrid is not None:
            target[action == 2] = slo_ttft_hybrid
        slo_ok &= col("ttft") <= target
    if slo_tpot is not None:
        slo_ok &= col("tpot") <= slo_tpot
    prompt = col("prompt_tokens").sum()

    out: dict[str, float] = {
        "n_requests": float(n),
        "quality": float(delivered.mean()),
        **routing,
        "cost": cost_total / n,
        "cost_per_1k": 1000.0 * cost_total / n,  # readable scale: cost-model units (USD) per 1000 requests
        "cost_total": cost_total,
        "cost_saving": 1.0 - cost_total / reference_cost if reference_cost else float("nan"),
        "mix_large": float((action == Action.LARGE).mean()),
        "mix_small": float((action == Action.SMALL).mean()),
        "mix_hybrid": float((action == Action.HYBRID).mean()),
        "cache_hit_rate": float(col("cached_tokens").sum() / prompt) if prompt > 0 else float("nan"),
        "slo_attainment": float(slo_ok.mean()),
        "failed_rate": float(failed.mean()),
    }
    for p in PERCENTILES:
        out[f"ttft_p{p}"] = _pct(ttft, p)
        out[f"e2e_p{p}"] = _pct(e2e, p)
    out["tpot_p50"] = _pct(tpot, 50)
    return out
