"""``OnnxPolicy``: an exported policy folder served by onnxruntime, plus the guard the router reuses.

The folder format is :mod:`rlroute.export.manifest` (``policy.onnx`` with observation normalisation baked
in, ``manifest.json``). Loading validates the manifest and raises :class:`PolicyLoadError` with a reason
(``policy_missing``, ``policy_corrupt``, ``schema_mismatch``) that the router's fallback counts.

Per decision, :meth:`OnnxPolicy.decide` runs one observation through a single-threaded session with a
preallocated, IO-bound input/output buffer (no per-call allocation or name lookup) and passes the logits
through :func:`guard`: non-finite logits, no allowed action, an inference error or an over-budget call, or a
chosen pool that is unhealthy or paused each yield a fallback reason instead of a trusted action. Before
inference, an observation unlike the policy's training observations (the manifest's ``ood`` statistics,
:class:`rlroute.export.ood.OodGuard`), or one arriving while the recent requests' mean has shifted from
training's (its request window), is refused as ``out_of_distribution`` without running the graph.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.cluster.base import ACTION_POOLS, ClusterState
from rlroute.export.manifest import (
    INPUT_NAME,
    LOAD_REASONS,
    OUTPUT_NAME,
    REASON_CORRUPT,
    PolicyLoadError,
    SchemaId,
    action_bias,
    read_manifest,
)
from rlroute.export.ood import BLOCKS, REASON_OOD, OodGuard
from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import strong_score
from rlroute.policies.registry import make_policy
from rlroute.types import Action

__all__ = [
    "FALLBACK_REASONS",
    "Decision",
    "OnnxPolicy",
    "PolicyInferenceError",
    "PolicyLoadError",
    "guard",
    "masked_argmax",
]

# Runtime reasons, after the load-time ones of the manifest.
REASON_INFERENCE = "inference_error"
REASON_TIMEOUT = "inference_timeout"
REASON_NON_FINITE = "non_finite"
REASON_NO_ACTION = "no_allowed_action"
REASON_POOL = "pool_unavailable"
FALLBACK_REASONS: tuple[str, ...] = (
    *LOAD_REASONS,
    REASON_INFERENCE,
    REASON_TIMEOUT,
    REASON_NON_FINITE,
    REASON_NO_ACTION,
    REASON_POOL,
    REASON_OOD,
)

_ACTIONS: tuple[Action, ...] = tuple(Action)


class PolicyInferenceError(RuntimeError):
    """A decision could not be trusted and no fallback policy was given; ``reason`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(slots=True)
class Decision:
    """Outcome of one policy call: the action it chose, its logits and why it must not be trusted."""

    action: Action | None  # the policy's choice (None when there is none, e.g. non-finite logits)
    logits: np.ndarray
    reason: str | None = None  # None: trusted; else one of FALLBACK_REASONS
    elapsed_s: float = 0.0
    detail: str | None = None  # the exception text of an inference error, the drift of an OOD refusal
    drift2: np.ndarray | None = None  # squared per-block OOD drift (request, system, cache); None: no guard
    unenforced: str | None = None  # ``decide(enforce_ood=False)``: the OOD refusal the guard would have made


def masked_argmax(logits: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Argmax over allowed actions, batched over leading axes (first index wins ties, as ``torch.argmax``)."""
    if mask is None:
        return np.asarray(np.argmax(logits, axis=-1))
    return np.asarray(np.argmax(np.where(mask, logits, -np.inf), axis=-1))


def guard(logits: np.ndarray, mask: np.ndarray | None = None, state: ClusterState | None = None) -> Decision:
    """Check one observation's logits and pick the action, or say why the policy must not be trusted.

    Args:
        logits: float[n_actions] from the policy.
        mask: bool[n_actions], True where the action is allowed (None: all allowed).
        state: live/simulated cluster state; when given, an action whose pool is unhealthy or paused is
            refused with ``pool_unavailable``.
    """
    # Three values: plain Python floats beat NumPy's per-call overhead on this per-request path.
    vals = logits.tolist()
    if not all(map(math.isfinite, vals)):
        return Decision(None, logits, REASON_NON_FINITE)
    allowed = mask.tolist() if mask is not None else None
    best, best_v = -1, -math.inf
    for i, v in enumerate(vals):
        if (allowed is None or allowed[i]) and (best < 0 or v > best_v):
            best, best_v = i, v
    if best < 0:
        return Decision(None, logits, REASON_NO_ACTION)
    action = _ACTIONS[best]
    if state is not None:
        pools = state.pools
        for pool in ACTION_POOLS[action]:
            ps = pools.get(pool)
            if ps is None or not ps.available:
                return Decision(action, logits, REASON_POOL)
    return Decision(action, logits)


@dataclass
class OnnxPolicy(Policy):
    """A learned policy loaded from an exported folder (``rlroute export``).

    Args:
        path: the policy folder (``policy.onnx`` + ``manifest.json``).
        fallback: policy used by :meth:`act` when the guard refuses the decision (the router passes the
            seed heuristic); the manifest's ``fallback`` (a calibrated folder's, :mod:`rlroute.export.bias`)
            replaces it; without either, :meth:`act` raises :class:`PolicyInferenceError`.
        timeout_s: per-call inference budget; a slower call is reported as ``inference_timeout``.
        schema: feature schema to validate against (default: what the running features code builds for the
            manifest's text representation; ``feature_text`` tells the caller which extractor to use).
        ood: score every observation against the manifest's training statistics and refuse those out of
            distribution (no effect for a folder exported without ``ood``).
        ood_scale: multiplies the calibrated per-block thresholds (> 1: fewer refusals).
        ood_range_margin: replaces the calibrated widening of a ``lin`` feature's training range (None: the
            manifest's).
        ood_range_factor: replaces the calibrated widening factor of a ``log`` feature's range (None: the
            manifest's).

    Raises:
        PolicyLoadError: the folder is missing, corrupt, or was exported for another feature schema.

    Not thread-safe: :meth:`logits` reuses one bound input/output buffer, so use one instance per thread
    (an asyncio router deciding on its event loop shares one safely).
    """

    path: str | Path
    fallback: Policy | None = None
    timeout_s: float | None = None
    schema: SchemaId | None = None
    ood: bool = True
    ood_scale: float = 1.0
    ood_range_margin: float | None = None
    ood_range_factor: float | None = None
    name: str = "onnx"
    manifest: dict[str, Any] = field(init=False, repr=False)
    fallbacks: Counter[str] = field(init=False, repr=False)
    last: Decision | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        self.path = Path(self.path)
        self.manifest = read_manifest(self.path, self.schema)
        self.feature_text = str(self.manifest["feature_schema"].get("text", "hash"))
        self.fallbacks = Counter()
        onnx_meta = self.manifest["onnx"]
        self.obs_dim = int(onnx_meta["obs_dim"])
        self.n_actions = int(onnx_meta["n_actions"])
        self.guard: OodGuard | None = None
        if self.ood and self.manifest.get("ood"):
            try:
                self.guard = OodGuard.from_json(self.manifest["ood"], self.ood_scale, self.ood_range_margin,
                                               self.ood_range_factor)
            except ValueError as e:
                raise PolicyLoadError(REASON_CORRUPT, f"{self.path}: {e}") from e
            if len(self.guard.stats.mean) != self.obs_dim:
                raise PolicyLoadError(REASON_CORRUPT, f"{self.path}: ood statistics have "
                                      f"{len(self.guard.stats.mean)} features, the graph {self.obs_dim}")
        self._nan = np.full(self.n_actions, np.nan, dtype=np.float32)
        opts = ort.SessionOptions()
        # One decision is a few small GEMMs: thread pools only add wake-up latency.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(self.path / onnx_meta["file"]), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise PolicyLoadError(REASON_CORRUPT, f"{self.path}: onnxruntime cannot load the graph ({e})") from e
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise PolicyLoadError(
                REASON_CORRUPT,
                f"{self.path}: graph has inputs {[i.name for i in inputs]} / outputs {[o.name for o in outputs]}, "
                f"expected [{INPUT_NAME!r}] -> {OUTPUT_NAME!r}",
            )
        # Preallocated single-row buffers bound once; each call copies the observation in and runs.
        self._in = np.zeros((1, self.obs_dim), dtype=np.float32)
        self._out = np.zeros((1, self.n_actions), dtype=np.float32)
        self._binding = self._session.io_binding()
        self._binding.bind_cpu_input(INPUT_NAME, self._in)
        self._binding.bind_output(
            OUTPUT_NAME, "cpu", 0, np.float32, list(self._out.shape), self._out.ctypes.data
        )
        self._in_row, self._out_row = self._in[0], self._out[0]  # views made once, not per call
        if self.manifest.get("fallback") is not None:  # validated by read_manifest: a FALLBACK_RULES name
            self.fallback = make_policy(str(self.manifest["fallback"]))
        bias = action_bias(self.manifest)
        self._bias = None if bias is None else np.array(bias, dtype=np.float32)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Logits for one raw observation (normalisation is inside the graph), plus the manifest's
        ``action_bias`` when it has one (a deployment calibration, :mod:`rlroute.export.bias`); a fresh
        array."""
        np.copyto(self._in_row, obs, casting="same_kind")
        self._session.run_with_iobinding(self._binding)
        if self._bias is None:
            return self._out_row.copy()
        return self._out_row + self._bias

    def decide(
        self, obs: np.ndarray, mask: np.ndarray | None = None, state: ClusterState | None = None,
        enforce_ood: bool = True,
    ) -> Decision:
        """Score the observation (OOD guard), run the policy on it and guard the result (see :func:`guard`).
        With ``enforce_ood`` false (the router's ``ood.enforce``) a refusal of the OOD guard is recorded in
        ``Decision.unenforced`` and the graph and the action guard decide as on a trusted observation."""
        t0 = time.perf_counter()
        drift2 = None
        unenforced = None
        try:
            if self.guard is not None:
                out, drift2 = self.guard.check(obs)
                window = self.guard.window.update(obs) if self.guard.window is not None else 0.0
                flagged = out or window > 1.0
                if flagged and enforce_ood:
                    r = [f"{b} {math.sqrt(v):.2f}" for b, v in zip(BLOCKS, drift2.tolist(), strict=True)]
                    d = Decision(None, self._nan.copy(), REASON_OOD, time.perf_counter() - t0,
                                 "drift/threshold " + ", ".join(r) + f", request window {window:.2f}"
                                 " (or a feature outside its training range)", drift2)
                    self.last = d
                    return d
                if flagged:
                    unenforced = REASON_OOD
            logits = self.logits(obs)
        except Exception as e:  # any runtime failure means: do not trust, fall back
            d = Decision(None, self._nan.copy(), REASON_INFERENCE, time.perf_counter() - t0,
                         f"{type(e).__name__}: {e}", drift2)
            self.last = d
            return d
        elapsed = time.perf_counter() - t0
        d = guard(logits, mask, state)
        d.elapsed_s = elapsed
        d.drift2 = drift2
        d.unenforced = unenforced
        if d.reason is None and self.timeout_s is not None and elapsed > self.timeout_s:
            d.reason = REASON_TIMEOUT
        self.last = d
        return d

    def action_probs(self, obs: np.ndarray) -> np.ndarray:
        """The policy's action distribution for one raw observation (softmax of :meth:`logits`)."""
        z = self.logits(obs).astype(np.float64)
        e = np.exp(z - z.max())
        return e / e.sum()  # type: ignore[no-any-return]

    def score(self, ctx: DecisionContext) -> float:
        """P(large) + P(hybrid) over the allowed actions: the score RouteLLM's APGR sweep thresholds."""
        return strong_score(self.action_probs(ctx.obs), ctx.mask)

    def act(self, ctx: DecisionContext) -> Action:
        """The policy's action for ``ctx``, or the fallback's when the guard refuses it (counted by reason)."""
        return self.resolve(self.decide(ctx.obs, ctx.mask, ctx.state), ctx)

    def resolve(self, d: Decision, ctx: DecisionContext) -> Action:
        """The action of a :meth:`decide` result: its own when the guard trusts it, else the fallback's for
        ``ctx`` (the refusal counted in :attr:`fallbacks` by reason; without a fallback,
        :class:`PolicyInferenceError`). The router calls :meth:`decide` and this separately to read the drift."""
        if d.reason is None and d.action is not None:
            return d.action
        assert d.reason is not None
        self.fallbacks[d.reason] += 1
        if self.fallback is not None:
            return self.fallback.act(ctx)
        raise PolicyInferenceError(d.reason, f"{self.path}: decision for request {ctx.request.id} refused")

    def reset(self, rng: np.random.Generator) -> None:
        """A new episode: the guard's request window forgets (as a fresh router's); the fallback is reset too."""
        if self.guard is not None and self.guard.window is not None:
            self.guard.window.reset()
        if self.fallback is not None:
            self.fallback.reset(rng)
