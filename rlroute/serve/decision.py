"""One routing decision in the router: features, the ONNX policy behind its guard, the heuristic fallback.

:class:`PolicySlot` holds the loaded policy (or the reason there is none) and its feature extractor as
one immutable :class:`Loaded` record; a reload builds a new record off the event loop and swaps the
reference in one assignment, so a decision in progress keeps the record it started with and nothing is
dropped. Every decision the policy does not make itself is made by the fallback policy (``conf/serve.yaml``
``fallback``, a ``conf/policy`` entry: the seed heuristic by default) — through the policy's own guard
(:meth:`rlroute.policies.onnx.OnnxPolicy.resolve`) when a policy is loaded — and reported with
its reason (``policy_missing``, ``policy_corrupt``, ``schema_mismatch``, ``out_of_distribution``,
``inference_error``, ``inference_timeout``, ``non_finite``, ``pool_unavailable``, ``feature_error``).

With ``ood.enforce`` false the guard still scores every observation (drift gauges, request window, the
whole cost of the check) but does not refuse: a decision it would have refused is run through the graph
and the action guard like any other and comes back with ``Outcome.unenforced`` = ``out_of_distribution``
(the router counts it in ``rlroute_router_ood_unenforced_total``). That is a rollout setting — watch what the
guard would do to live traffic before letting it act — and what ``rlroute bench router`` uses to time the
full decision path on load-generator prompts the guard calls out of distribution.

With ``ood.record`` set, every observation decided on is kept and written to that ``.npy`` file when the
router stops — served traffic to calibrate a guard on (``rlroute export ood.obs_file=...``).

The policy scores every observation against its training statistics (:mod:`rlroute.export.ood`);
:class:`DriftMeter` keeps an exponentially weighted mean of each block's squared drift for the
``rlroute_router_ood_drift`` gauges (1.0 = the block's calibrated threshold).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.export.ood import BLOCKS
from rlroute.policies.base import DecisionContext, Policy
from rlroute.types import Action, Request

REASON_FEATURES = "feature_error"
REASON_HEURISTIC = "heuristic_error"


@dataclass(frozen=True, slots=True)
class Loaded:
    """An immutable policy generation: the policy (or None), why it is None, and its extractor."""

    policy: Any | None  # rlroute.policies.onnx.OnnxPolicy
    reason: str | None
    detail: str
    extractor: Any  # rlroute.features.FeatureExtractor
    path: str | None
    loaded_at: float


@dataclass(slots=True)
class Outcome:
    """A routing decision: the action, who made it and, for a fallback, why."""

    action: Action
    source: str  # "policy" | "fallback"
    reason: str | None
    elapsed_s: float
    detail: str | None = None
    obs: np.ndarray | None = None  # the observation decided on (None when features failed)
    unenforced: str | None = None  # the guard's refusal reason when ``ood.enforce`` is false (decided anyway)


@dataclass(slots=True)
class OodSettings:
    """The router's OOD guard settings (``conf/serve.yaml`` ``ood``)."""

    enabled: bool = True
    enforce: bool = True  # False: score and count what the guard would refuse, but let the policy decide
    scale: float = 1.0  # multiplies the manifest's calibrated per-block thresholds
    range_margin: float | None = None  # None: the manifest's
    range_factor: float | None = None  # None: the manifest's
    halflife: float = 100.0  # decisions: half-life of the drift gauges' moving average
    record: str | None = None  # .npy file: every observation decided on is saved there at shutdown
    record_max: int = 100_000  # observations kept for ``record`` (the first ones)


@dataclass(slots=True)
class DriftMeter:
    """Exponentially weighted mean of the per-block squared drift over recent decisions (plain floats)."""

    halflife: float = 100.0
    mean2: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    n: int = 0

    def update(self, drift2: np.ndarray) -> None:
        """Fold in one decision's squared drift (request, system, cache)."""
        a = max(1.0 / (self.n + 1), 1.0 - 0.5 ** (1.0 / self.halflife))  # plain mean until the window fills
        m = self.mean2
        v = drift2.tolist()
        m[0] += a * (v[0] - m[0])
        m[1] += a * (v[1] - m[1])
        m[2] += a * (v[2] - m[2])
        self.n += 1

    def values(self) -> list[float]:
        """Root of the moving mean per block: RMS drift relative to the block's threshold."""
        return [math.sqrt(x) for x in self.mean2]


def load(path: str | None, timeout_s: float | None, ood: OodSettings | None = None,
         fallback: Policy | None = None) -> Loaded:
    """Load an exported policy folder (``fallback`` decides what its guard refuses); never raises — a
    failure becomes a fallback reason."""
    from rlroute.export.manifest import REASON_CORRUPT, REASON_MISSING, PolicyLoadError
    from rlroute.features import FeatureExtractor

    if not path:
        return Loaded(None, REASON_MISSING, "no policy.path configured", FeatureExtractor("hash"), None, time.time())
    try:
        from rlroute.policies.onnx import OnnxPolicy

        if not Path(path).exists():
            raise PolicyLoadError(REASON_MISSING, f"{path}: no such policy folder")
        o = ood or OodSettings()
        policy = OnnxPolicy(path, fallback=fallback, timeout_s=timeout_s, ood=o.enabled, ood_scale=o.scale,
                            ood_range_margin=o.range_margin, ood_range_factor=o.range_factor)
        extractor = FeatureExtractor(policy.feature_text)
        return Loaded(policy, None, "", extractor, path, time.time())
    except PolicyLoadError as e:
        return Loaded(None, e.reason, str(e), FeatureExtractor("hash"), path, time.time())
    except Exception as e:  # anything else unreadable about the folder: do not trust it
        return Loaded(None, REASON_CORRUPT, f"{type(e).__name__}: {e}", FeatureExtractor("hash"), path, time.time())


class PolicySlot:
    """The router's current policy generation and the decision procedure.

    Args:
        path: exported policy folder (None: heuristic only, counted as ``policy_missing``).
        timeout_ms: inference budget per decision.
        fallback: the policy deciding whenever the loaded one cannot (``conf/serve.yaml`` ``fallback``: the
            seed heuristic, :class:`rlroute.policies.heuristic.SeedHeuristic`, by default).
        ood: the out-of-distribution guard's settings.
    """

    def __init__(self, path: str | None, timeout_ms: float, fallback: Policy,
                 ood: OodSettings | None = None) -> None:
        self.timeout_s = timeout_ms / 1000.0 if timeout_ms > 0 else None
        self.ood = ood or OodSettings()
        self.drift = DriftMeter(self.ood.halflife)
        self.recorded: list[np.ndarray] = []  # observations for ``ood.record`` (calibrating on served traffic)
        self.fallback = fallback
        self.current: Loaded = load(path, self.timeout_s, self.ood, fallback)
        self._reload_lock = asyncio.Lock()

    async def reload(self, path: str | None) -> Loaded:
        """Load ``path`` (default: the current path) in a thread; swap it in only if it loaded.

        Returns:
            The attempted generation (check ``reason``); the slot keeps the old one on failure.
        """
        async with self._reload_lock:
            new = await asyncio.to_thread(load, path or self.current.path, self.timeout_s, self.ood, self.fallback)
            if new.policy is not None:
                self.current = new  # one reference assignment: atomic for every coroutine
                self.drift = DriftMeter(self.ood.halflife)  # drift is relative to the new policy's thresholds
            return new

    def decide(self, request: Request, state: ClusterState, matches: dict[str, list[int]]) -> Outcome:
        """Choose an action for ``request``: the policy if its guard trusts it, else the fallback policy."""
        t0 = time.perf_counter()
        gen = self.current
        obs: np.ndarray | None = None
        reason: str | None = gen.reason
        detail: str | None = gen.detail or None
        try:
            obs = gen.extractor.extract(request, state, matches)
        except Exception as e:  # a feature bug must not take the router down
            reason, detail = REASON_FEATURES, f"{type(e).__name__}: {e}"
        if obs is not None and self.ood.record and len(self.recorded) < self.ood.record_max:
            self.recorded.append(obs.copy())
        policy, d = gen.policy, None
        if obs is not None and policy is not None:
            d = policy.decide(obs, None, state, enforce_ood=self.ood.enforce)
            if d.drift2 is not None:
                self.drift.update(d.drift2)
            if d.reason is None and d.action is not None:
                return Outcome(Action(d.action), "policy", None, time.perf_counter() - t0, None, obs, d.unenforced)
            reason, detail = d.reason, d.detail
        ctx = DecisionContext(request, state, matches, obs if obs is not None else np.zeros(len(gen.extractor.schema), np.float32))
        try:
            # a refused decision goes through the policy's own fallback (counted by reason in its ``fallbacks``)
            action = policy.resolve(d, ctx) if policy is not None and d is not None else self.fallback.act(ctx)
        except Exception as e:
            # Last resort: any available pool, small first (cheaper).
            action = next((Action(i) for i, p in ((1, "small"), (0, "large")) if state.pools[p].available),
                          Action.SMALL)
            detail = f"{detail or ''}; fallback failed: {type(e).__name__}: {e}"
        return Outcome(action, "fallback", reason or REASON_HEURISTIC, time.perf_counter() - t0, detail, obs)

    def window(self) -> float | None:
        """The current policy's request-window score (1 = its threshold); None without a window or before the
        first decision."""
        p = self.current.policy
        w = p.guard.window if p is not None and p.guard is not None else None
        return w.score if w is not None and w.n else None

    def save_recorded(self) -> Path | None:
        """Write the recorded observations to ``ood.record`` (``float32[n, dim]`` .npy); None when off."""
        if not self.ood.record:
            return None
        path = Path(self.ood.record)
        path.parent.mkdir(parents=True, exist_ok=True)
        dim = len(self.current.extractor.schema)
        np.save(path, np.stack(self.recorded) if self.recorded else np.zeros((0, dim), np.float32))
        return path

    def describe(self) -> dict[str, Any]:
        """What is loaded, for ``/admin/status`` and reload answers."""
        g = self.current
        info: dict[str, Any] = {"path": g.path, "loaded": g.policy is not None, "reason": g.reason,
                                "detail": g.detail, "loaded_at": g.loaded_at}
        if g.policy is not None:
            m = g.policy.manifest
            info["feature_schema"] = m.get("feature_schema")
            info["created_at"] = m.get("created_at")
            cal = (m.get("ood") or {}).get("calibration")
            info["ood"] = {"guarded": g.policy.guard is not None, "settings": {
                "enabled": self.ood.enabled, "scale": self.ood.scale, "range_margin": self.ood.range_margin,
                "range_factor": self.ood.range_factor},
                "calibration": cal, "drift": dict(zip(BLOCKS, self.drift.values(), strict=True)),
                "request_window": self.window()}
        return info
