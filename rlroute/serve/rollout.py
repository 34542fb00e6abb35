"""Several policies in one router: the incumbent and candidates in shadow, canary or A/B mode, an exploration
floor, and the automatic rollback rule (``docs/rollout.md``; issue 17).

Every active (not paused) candidate is an exported folder in its own :class:`~rlroute.serve.decision.PolicySlot`
(schema check, OOD guard and fallback, as the incumbent's) and decides on every request; which arm's action is
executed is decided per request:

- ``shadow``: never acts; its decisions are logged and counted per arm.
- ``canary``: acts on a ``share`` of the traffic, chosen by a hash of the session (``sticky: session``; a request
  without ``x-rlroute-session`` falls back to its request id) or of the request id (``sticky: request``), so a
  conversation stays on one arm; watched by the rollback rule.
- ``ab``: a fixed split like a canary's, not watched by the rollback rule (an experiment is paused or removed by
  an operator).

Shares of the acting candidates are laid end to end over ``[0, 1)`` in the order the candidates were added; the
incumbent acts on the rest. With ``epsilon > 0`` the executed action is, with probability ``epsilon``, drawn
uniformly from the allowed actions instead (off by default): every arm's probability of the logged action is
then ``(1 - epsilon) * [arm's action == logged] + epsilon / |allowed|``, recorded per arm in the decision log,
so logs support unbiased off-policy estimates; with ``epsilon = 0`` every propensity is 0 or 1.

Rollback: for each canary, over the last ``window`` answered requests of the canary and of the incumbent (each
at least ``min_requests``), the canary is paused when its p99 TTFT exceeds ``p99_ttft_ratio`` x the
incumbent's + ``p99_ttft_slack_s``, or its fallback rate exceeds the incumbent's + ``fallback_rate_delta``.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlroute.cluster.base import ClusterState, action_mask
from rlroute.serve.decision import Outcome, PolicySlot
from rlroute.types import ACTION_NAMES, Action, Request

MODES = ("shadow", "canary", "ab")
STICKY = ("session", "request")
INCUMBENT = "incumbent"


@dataclass(slots=True)
class RollbackRule:
    """``rollout.rollback`` (module doc)."""

    enabled: bool = True
    window: int = 200
    min_requests: int = 50
    p99_ttft_ratio: float = 1.5
    p99_ttft_slack_s: float = 0.05
    fallback_rate_delta: float = 0.10


@dataclass(slots=True)
class CandidateSpec:
    """One candidate of ``rollout.candidates`` (or of ``POST /admin/arms``)."""

    name: str
    path: str
    mode: str = "shadow"
    share: float = 0.0
    sticky: str = "session"

    def check(self) -> None:
        """Raise ``ValueError`` naming the field that is wrong."""
        if not self.name or self.name == INCUMBENT:
            raise ValueError(f"candidate name: expected a non-empty name other than {INCUMBENT!r}, got {self.name!r}")
        if self.mode not in MODES:
            raise ValueError(f"candidate {self.name}: mode: expected one of {MODES}, got {self.mode!r}")
        if self.sticky not in STICKY:
            raise ValueError(f"candidate {self.name}: sticky: expected one of {STICKY}, got {self.sticky!r}")
        if not 0.0 <= self.share <= 1.0 or (self.mode != "shadow" and self.share <= 0.0):
            raise ValueError(f"candidate {self.name}: share: expected a fraction in (0, 1] for mode {self.mode} "
                             f"(0 for shadow), got {self.share!r}")


@dataclass(slots=True)
class RolloutSettings:
    """``conf/serve.yaml`` ``rollout``."""

    candidates: list[CandidateSpec] = field(default_factory=list)
    epsilon: float = 0.0
    seed: int = 0
    rollback: RollbackRule = field(default_factory=RollbackRule)


@dataclass(slots=True)
class ArmWindow:
    """The last answered requests an arm acted on: TTFT (None: no answer) and whether the fallback decided."""

    size: int
    ttft: deque[float] = field(init=False)
    fallback: deque[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.ttft, self.fallback = deque(maxlen=self.size), deque(maxlen=self.size)

    def p99_ttft(self) -> float:
        return float(np.percentile(np.fromiter(self.ttft, float), 99)) if self.ttft else float("nan")

    def fallback_rate(self) -> float:
        return sum(self.fallback) / len(self.fallback) if self.fallback else float("nan")


@dataclass(slots=True)
class Arm:
    """A candidate: its spec, its policy slot, its state."""

    spec: CandidateSpec
    slot: PolicySlot
    window: ArmWindow
    paused: bool = False
    paused_reason: str | None = None
    added_at: float = field(default_factory=time.time)


def bucket(key: str) -> float:
    """A stable position in ``[0, 1)`` of a session or request id."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") / 2.0**64


@dataclass(slots=True)
class Decision:
    """What the rollout made of one request: the executed outcome, the acting arm, per-arm decisions."""

    outcome: Outcome
    arm: str
    propensity: float
    arms: dict[str, dict[str, Any]]


class Rollout:
    """The candidates beside the router's incumbent slot (module doc)."""

    def __init__(self, settings: RolloutSettings, make_slot: Any) -> None:
        self.settings = settings
        self.make_slot = make_slot  # path -> PolicySlot (the router's timeout, fallback and OOD settings)
        self.arms: dict[str, Arm] = {}
        self.incumbent = ArmWindow(settings.rollback.window)
        self.rng = random.Random(settings.seed)
        self.rollbacks: list[dict[str, Any]] = []
        self._mask = np.ones(3, dtype=bool)
        for spec in settings.candidates:
            self.add(spec, make_slot(spec.path))

    @property
    def active(self) -> bool:
        """True when a candidate is configured or exploration is on (else the router skips all of this)."""
        return bool(self.arms) or self.settings.epsilon > 0.0

    def add(self, spec: CandidateSpec, slot: PolicySlot) -> Arm:
        """Add a candidate (its slot already loaded); raises ``ValueError`` for a bad spec or share sum."""
        spec.check()
        if spec.name in self.arms:
            raise ValueError(f"candidate {spec.name!r} exists already; remove it first")
        acting = sum(a.spec.share for a in self.arms.values() if a.spec.mode != "shadow")
        if spec.mode != "shadow" and acting + spec.share > 1.0 + 1e-9:
            raise ValueError(f"candidate {spec.name}: share {spec.share} would bring the acting shares to "
                             f"{acting + spec.share:.3f} > 1")
        arm = Arm(spec, slot, ArmWindow(self.settings.rollback.window))
        self.arms[spec.name] = arm
        return arm

    def acting(self, rid: str, session: str | None) -> Arm | None:
        """The candidate that acts on this request (None: the incumbent)."""
        edge = 0.0
        u: dict[str, float] = {}
        for arm in self.arms.values():
            s = arm.spec
            if s.mode == "shadow":
                continue
            if not arm.paused:  # a paused arm's range stays reserved (the incumbent takes it): others do not move
                key = session if s.sticky == "session" and session else rid
                x = u.get(key)
                if x is None:
                    x = u[key] = bucket(key)
                if edge <= x < edge + s.share:
                    return arm
            edge += s.share
        return None

    def decide(self, req: Request, rid: str, session: str | None, incumbent: Outcome, state: ClusterState,
               matches: dict[str, list[int]]) -> Decision:
        """Every active candidate decides; the acting arm's action (or an ε draw) is executed."""
        acting = self.acting(rid, session)
        outs: dict[str, Outcome] = {INCUMBENT: incumbent}
        for name, arm in self.arms.items():
            if not arm.paused:
                outs[name] = arm.slot.decide(req, state, matches)
        name = acting.spec.name if acting is not None else INCUMBENT
        executed = outs[name]
        eps = self.settings.epsilon
        allowed = [a for a in Action if action_mask(state, self._mask)[int(a)]]
        if eps > 0.0 and self.rng.random() < eps:
            drawn = self.rng.choice(allowed)
            executed = Outcome(drawn, "explore", None, executed.elapsed_s, None, executed.obs)
        a = int(executed.action)
        floor = eps / len(allowed) if a in allowed else 0.0
        prob = {k: (1.0 - eps) * (int(o.action) == a) + floor for k, o in outs.items()}
        arms = {k: {"action": int(o.action), "action_name": ACTION_NAMES[o.action], "source": o.source,
                    "reason": o.reason, "propensity": prob[k]} for k, o in outs.items()}
        return Decision(executed, name, prob[name], arms)

    def observe(self, arm: str, source: str, ttft_s: float | None) -> dict[str, Any] | None:
        """One answered request of ``arm``; returns the rollback it triggered, if any (the arm is paused)."""
        w = self.incumbent if arm == INCUMBENT else self.arms[arm].window if arm in self.arms else None
        if w is None or ttft_s is None:
            return None
        w.ttft.append(ttft_s)
        w.fallback.append(source == "fallback")
        cand = self.arms.get(arm)
        rule = self.settings.rollback
        if cand is None or cand.paused or cand.spec.mode != "canary" or not rule.enabled:
            return None
        inc = self.incumbent
        if len(w.ttft) < rule.min_requests or len(inc.ttft) < rule.min_requests:
            return None
        why = None
        p_c, p_i = w.p99_ttft(), inc.p99_ttft()
        f_c, f_i = w.fallback_rate(), inc.fallback_rate()
        if p_c > rule.p99_ttft_ratio * p_i + rule.p99_ttft_slack_s:
            why = "p99_ttft"
        elif f_c > f_i + rule.fallback_rate_delta:
            why = "fallback_rate"
        if why is None:
            return None
        cand.paused, cand.paused_reason = True, f"rollback: {why}"
        event = {"arm": arm, "rule": why, "at": time.time(), "canary_p99_ttft_s": p_c, "incumbent_p99_ttft_s": p_i,
                 "canary_fallback_rate": f_c, "incumbent_fallback_rate": f_i, "window": len(w.ttft)}
        self.rollbacks.append(event)
        return event

    def promote(self, name: str, incumbent: PolicySlot) -> Arm:
        """Candidate ``name``'s loaded policy becomes the incumbent's (one reference swap); it leaves the arms and
        the incumbent's rollback window starts over."""
        arm = self.arms.pop(name)
        incumbent.current, incumbent.drift = arm.slot.current, arm.slot.drift
        self.incumbent = ArmWindow(self.settings.rollback.window)
        return arm

    def describe(self) -> dict[str, Any]:
        """The arms and their state, for ``GET /admin/arms``."""
        def window(w: ArmWindow) -> dict[str, Any]:
            return {"answered": len(w.ttft), "p99_ttft_s": w.p99_ttft() if w.ttft else None,
                    "fallback_rate": w.fallback_rate() if w.fallback else None}

        return {"epsilon": self.settings.epsilon, "incumbent": window(self.incumbent),
                "candidates": {n: {"path": a.spec.path, "mode": a.spec.mode, "share": a.spec.share,
                                   "sticky": a.spec.sticky, "paused": a.paused, "paused_reason": a.paused_reason,
                                   "loaded": a.slot.current.policy is not None, "reason": a.slot.current.reason,
                                   **window(a.window)} for n, a in self.arms.items()},
                "rollbacks": self.rollbacks}
