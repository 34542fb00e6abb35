"""Step-time models of the serving profiles and their fits (used by ``fit_profiles.py``).

The agreed 4-term model ``a + b*P + c*D + d*C`` (P prefill tokens, D decoding sequences, C context tokens)
and the optional extended terms the simulator reads from a profile's ``step_time_moe`` /
``step_time_attn`` block (``rlroute/cluster/profiles/__init__.py``): ``e`` x expected distinct experts
touched by the step's P + D tokens, ``f`` x attended (query, key) pairs of the prefill chunk. Fits are
non-negative least squares of the relative error on the ``fit`` shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls


def design(shapes: list[dict[str, Any]]) -> np.ndarray:
    """Rows [1, prefill_tokens, decode_seqs, context_tokens] of the step model."""
    return np.array([[1.0, s["prefill_tokens"], s["decode_seqs"], s["context_tokens"]] for s in shapes])


def prefill_pairs(shape: dict[str, Any]) -> float:
    """Attended (query, key) pairs of the shape's prefill part: ``n_seqs`` prompts of ``seq_len`` tokens
    from position 0 (``n_seqs * rlroute.cluster.profiles.chunk_pairs(seq_len)``); 0 for decode-only shapes."""
    if shape["prefill_tokens"] == 0:
        return 0.0
    n, length = shape["n_seqs"], shape["seq_len"]
    return float(n * length * (length + 1) / 2)


def design_ext(shapes: list[dict[str, Any]], terms: str, n_experts: int = 0, top_k: int = 0) -> np.ndarray:
    """4-term rows plus ``e`` (experts touched) and/or ``f`` (attended pairs) columns, in that order."""
    x = design(shapes)
    cols = [x]
    if "e" in terms:
        cols.append(experts_touched(x[:, 1] + x[:, 2], n_experts, top_k)[:, None])
    if "f" in terms:
        cols.append(np.array([prefill_pairs(s) for s in shapes])[:, None])
    return np.hstack(cols)


def kernel_pair_cost(shapes: list[dict[str, Any]], n_layers: int) -> float:
    """Seconds per attended pair of the measured prefill attention kernel (all layers), at the longest
    single-prompt prefill: the rate the simulator charges for attending to a prompt's earlier KV (``g``)."""
    s = max((s for s in shapes if s["mode"] == "prefill" and s["n_seqs"] == 1), key=lambda s: s["seq_len"])
    return float(s["ops"]["attention"] * n_layers / 1e3 / prefill_pairs(s))


def fit_step_model(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on the relative error: min ||(X beta - y) / y||, beta >= 0."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    beta, _ = nnls(x / scale / y[:, None], np.ones(len(y)))
    return np.asarray(beta / scale)


def experts_touched(tokens: np.ndarray, n_experts: int, top_k: int) -> np.ndarray:
    """Expected number of distinct experts a step's tokens route to (uniform routing): E(1-(1-k/E)^T)."""
    return np.asarray(n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens))


def variant_errors(shapes: list[dict[str, Any]], y: np.ndarray, mixed: list[dict[str, Any]], ym: np.ndarray,
                   terms: str, n_experts: int = 0, top_k: int = 0) -> dict[str, Any]:
    """Fit ``a..d`` + ``terms`` (subset of "ef") on the fit shapes; median errors on fit / held-out / mixed."""
    x = design_ext(shapes, terms, n_experts, top_k)
    is_fit = np.array([s["split"] == "fit" for s in shapes])
    beta = fit_step_model(x[is_fit], y[is_fit])
    rel = np.abs(x @ beta - y) / y
    out: dict[str, Any] = dict(coeffs=dict(zip("abcd" + terms, (float(v) for v in beta), strict=True)),
                               median_rel_error=float(np.median(rel[is_fit])),
                               heldout_median_rel_error=float(np.median(rel[~is_fit])), max_rel_error=float(rel.max()))
    if mixed:
        out["mixed_median_rel_error"] = float(np.median(np.abs(design_ext(mixed, terms, n_experts, top_k) @ beta - ym) / ym))
    return out


def extension_block(shapes: list[dict[str, Any]], y: np.ndarray, mixed: list[dict[str, Any]], ym: np.ndarray,
                    n_experts: int, top_k: int, n_fit: int, date: str, n_layers: int) -> tuple[str, dict[str, Any]]:
    """The optional extended block the simulator uses: ``step_time_moe`` (n_experts > 0) or ``step_time_attn``.

    The agreed 4-term model is linear in decode_seqs, but an MoE decode step reads only the experts its
    tokens touch (8 at batch 1, nearly all 128 by batch ~64), which no single c can follow: the ``e`` term
    follows that saturation. Causal attention makes prefill quadratic in the chunk length (a single
    8k-token chunk was under-predicted by ~25 % without it): the ``f`` term counts the pairs among a chunk's
    new tokens. No measured chunk follows earlier KV of its prompt, so the ``g`` term (pairs to that KV) is
    not fitted: it is the attention kernel's measured time per pair (:func:`kernel_pair_cost`). The fitted
    ``f`` is larger than that (1.1-2.7x): it also absorbs the GEMMs' rising efficiency with chunk length,
    which does not grow with the prefix.
    """
    terms = "ef" if n_experts else "f"
    v = variant_errors(shapes, y, mixed, ym, terms, n_experts, top_k)
    moe = "e*E*(1-(1-k/E)^(prefill_tokens+decode_seqs)) + " if n_experts else ""
    blk: dict[str, Any] = dict(
        formula=f"a + b*prefill_tokens + c*decode_seqs + d*context_tokens + {moe}f*chunk_pairs + g*prefix_pairs",
        source=(f"a-f: relative-error-weighted NNLS fit to the same {n_fit} fit-split step times as step_time ({date}, "
                "fit_profiles.py); g: measured prefill attention kernel time per pair (all layers) at the longest "
                "single-prompt chunk; chunk_pairs = sum over the chunk's prompts of t*(t+1)/2, prefix_pairs = sum of "
                "t*s, for t new tokens after s already in the KV cache (measured shapes have s = 0)"))
    if n_experts:
        blk.update(num_experts=n_experts, top_k=top_k)
    coeffs = dict(v["coeffs"], g=kernel_pair_cost(shapes, n_layers))
    blk.update(coeffs={k: float(f"{c:.4g}") for k, c in coeffs.items()},
               median_rel_error=round(v["median_rel_error"], 4),
               heldout_median_rel_error=round(v["heldout_median_rel_error"], 4), max_rel_error=round(v["max_rel_error"], 4))
    if "mixed_median_rel_error" in v:
        blk["mixed_median_rel_error"] = round(v["mixed_median_rel_error"], 4)
    return ("step_time_moe" if n_experts else "step_time_attn"), blk


def simulator_errors(path: Path, shapes: list[dict[str, Any]], y: np.ndarray, mixed: list[dict[str, Any]],
                     ym: np.ndarray) -> dict[str, Any]:
    """Errors of the simulator's own step-time model (``ServingProfile.step_time`` of the written file)."""
    from rlroute.cluster.profiles import parse_profile

    prof = parse_profile(path)

    def pred(ss: list[dict[str, Any]]) -> np.ndarray:
        return np.array([prof.step_time(s["prefill_tokens"], s["decode_seqs"], s["context_tokens"], prefill_pairs(s))
                         for s in ss])

    p = pred(shapes)
    rel = np.abs(p - y) / y
    is_fit = np.array([s["split"] == "fit" for s in shapes])
    out: dict[str, Any] = dict(simulator_model="step_time_" + prof.ext.kind if prof.ext else "step_time (4-term)",
                               simulator_median_rel_error=round(float(np.median(rel[is_fit])), 4),
                               simulator_heldout_median_rel_error=round(float(np.median(rel[~is_fit])), 4),
                               simulator_max_rel_error=round(float(rel.max()), 4), pred=p.tolist())
    if mixed:
        pm = pred(mixed)
        out.update(simulator_mixed_median_rel_error=round(float(np.median(np.abs(pm - ym) / ym)), 4), mixed_pred=pm.tolist())
    return out
