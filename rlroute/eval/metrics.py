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
* APGR: RouteLLM computes ``(AUC − AUC_weak) / (AUC_strong − AUC_weak)`` with trapezoids over the router's
  (strong-call %, quality) points. For a router with a score we sweep the threshold over a grid of strong-
  call shares (0 %, 5 %, …, 100 %) on the episode's requests, exactly as RouteLLM's offline evaluation
  does. A fixed policy has one operating point; the same ratio over a vanishing x-range is its PGR, so we
  define APGR = PGR at its operating point — all-small 0, all-large 1, random ≈ its call share.
* CPT(x %): the smallest strong-call share that reaches PGR x, interpolated linearly along the curve (as
  RouteLLM's ``np.interp``); for a single operating point, its call share if it reaches x, else NaN.
* Strong-model calls count large and hybrid (hybrid calls the large model for its plan).

These ratios are computed per episode (``episode_metrics``) and, for the summary, on the pooled requests
of all seeds (``routing_metrics`` over the pooled arrays, as RouteLLM computes them on the whole set): a
per-episode ratio explodes when that episode's gap ``q_strong − q_weak`` is near zero (a few hundred
requests of held-out subjects where the two models tie), so the pooled value with a bootstrap interval
over requests is the reported one (``rlroute.eval.run.summarise``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlroute.types import Action

Record = dict[str, Any]
Curve = Sequence[float] | np.ndarray
PERCENTILES = (50, 90, 99)
SWEEP_SHARES = np.linspace(0.0, 1.0, 21)


def pgr(q: float, q_weak: float, q_strong: float) -> float:
    """Performance gap recovered; NaN when the two models perform the same."""
    gap = q_strong - q_weak
    return float((q - q_weak) / gap) if abs(gap) > 1e-12 else float("nan")


def apgr(shares: Curve, qualities: Curve, q_weak: float, q_strong: float) -> float:
    """RouteLLM's APGR of the (strong-call share, quality) points; one point → its PGR (module doc)."""
    x, q = _sorted_curve(shares, qualities)
    span = float(x[-1] - x[0])
    if span <= 1e-12:
        return pgr(float(np.mean(q)), q_weak, q_strong)
    auc = float(np.trapezoid(q, x))
    return pgr(auc / span, q_weak, q_strong)


def cpt(shares: Curve, qualities: Curve, q_weak: float, q_strong: float, level: float) -> float:
    """Call-performance threshold: least strong-call share reaching PGR ``level`` (NaN if never)."""
    x, q = _sorted_curve(shares, qualities)
    target = q_weak + level * (q_strong - q_weak)
    if x.size == 1:
        return float(x[0]) if q[0] >= target - 1e-12 else float("nan")
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
    scores: np.ndarray, ok_large: np.ndarray, ok_small: np.ndarray, shares: np.ndarray = SWEEP_SHARES
) -> tuple[np.ndarray, np.ndarray]:
    """Quality when the top-``share`` requests by score go large and the rest small, for each share.

    Returns the realised shares (k / n) and qualities; the order of equal scores is kept stable.
    """
    n = scores.size
    if n == 0:
        raise ValueError("threshold_sweep: no requests")
    rank = np.argsort(-scores, kind="stable")
    gain = (ok_large.astype(np.float64) - ok_small.astype(np.float64))[rank]
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    ks = np.unique(np.round(shares * n).astype(int))
    quality = (ok_small.sum() + cum[ks]) / n
    return ks / n, quality


ROUTING_KEYS = ("pgr", "apgr", "cpt50", "cpt80")


def routing_metrics(action: np.ndarray, ok: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """RouteLLM's metrics of one set of decisions (module doc).

    Args:
        action: ``int[n]`` chosen actions.
        ok: ``bool[n, 3]`` drawn outcome of every action for each request.
        scores: ``float[n]`` router scores (all finite → threshold sweep; else single operating point).
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
