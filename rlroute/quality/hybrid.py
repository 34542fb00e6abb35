"""Hybrid-action quality: plan-and-execute (default; serial or pipelined) and cascade.

Both modes turn the small and large models' outcomes for one request into the hybrid action's outcome.
Their parameters are ASSUMPTIONS (no measurement of a Qwen3-235B planner + Qwen3-4B executor, or of a
verifier, exists in this project); they live in ``conf/quality/*.yaml`` under ``assumptions:`` and are
meant to be swept, not quoted.

- :class:`PlanAndExecute`: the large model writes a plan (``plan_tokens``, or a length drawn around it:
  :class:`rlroute.cluster.base.Hybrid`), the small model answers with it. ``mode: pipelined`` runs the same
  stages with the small pool warmed while the plan is written (a timing change only: same quality). The plan carries a ``share`` of the large model's advantage:
  ``p_h = p_s + share * (p_l - p_s)``. Outcomes are coupled to the two models' outcomes so that a
  joint draw is consistent: when both agree the hybrid agrees; when only the large model is right the
  hybrid is right with probability ``share``; when only the small model is right, with ``1 - share``.
  This gives exactly ``p_h`` above for any joint distribution of the two.
- :class:`Cascade`: the small model answers first; a modelled verifier escalates wrong answers with
  probability ``recall`` and right ones with ``false_escalation``; escalated requests get the large
  model's outcome (and its cost: the simulator reads ``QualityDraw.escalated``). With small and large
  conditionally independent given the request,
  ``p_h = p_s (1 - fe) + (p_s fe + (1 - p_s) recall) p_l``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class HybridMode(Protocol):
    """How the hybrid action's outcome follows from the small and large models' outcomes.

    ``mode`` ("plan_and_execute", "pipelined" or "cascade") is what the simulator reads to lay out the
    hybrid's stages; the plan modes also carry ``plan_tokens``, ``plan_sigma`` and ``plan_cap``.
    """

    mode: str

    def prob(self, p_large: float, p_small: float) -> float:
        """Marginal P(hybrid acceptable) given the two models' probabilities."""
        ...

    def draw(self, ok_large: bool, ok_small: bool, rng: np.random.Generator) -> tuple[bool, bool]:
        """``(ok_hybrid, escalated)`` consistent with the given outcomes."""
        ...


def _check_mode(given: str, expected: str) -> None:
    if given != expected:
        raise ValueError(
            f"hybrid mode {given!r} does not match its class ({expected!r}); fix `mode` or `_target_`"
        )


def _unit(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"hybrid parameter {name} must be in [0, 1], got {value!r}")
    return v


class PlanAndExecute:
    """Large model plans, small model executes (see module docstring).

    Args:
        plan_tokens: tokens of the plan the large model generates (its median when ``plan_sigma`` > 0); the
            simulator charges them to the large pool and appends them to the small model's prompt.
        share: share of the large model's advantage the plan carries, in [0, 1] (assumption).
        mode: "plan_and_execute" (serial, the default) or "pipelined" (the small pool is warmed while the
            large one plans; :class:`rlroute.cluster.base.Hybrid`); configs state it for the simulator.
        plan_sigma: log-space spread of the plan length (0: fixed; assumption, see ``Hybrid``).
        plan_cap: the longest plan (what the large pool is asked for when plans vary).
    """

    modes = ("plan_and_execute", "pipelined")

    def __init__(self, plan_tokens: int = 128, share: float = 0.6, mode: str = "plan_and_execute",
                 plan_sigma: float = 0.0, plan_cap: int = 512) -> None:
        if mode not in self.modes:
            raise ValueError(f"hybrid mode {mode!r} does not match its class (one of {self.modes}); fix `mode` or "
                             "`_target_`")
        self.mode = mode
        if int(plan_tokens) < 1:
            raise ValueError(f"plan_tokens must be >= 1, got {plan_tokens}")
        self.plan_tokens = int(plan_tokens)
        self.share = _unit("share", share)
        self.plan_sigma = float(plan_sigma)
        self.plan_cap = int(plan_cap)
        if not 0.0 <= self.plan_sigma <= 3.0:
            raise ValueError(f"plan_sigma must be in [0, 3], got {plan_sigma!r}")
        if self.plan_cap < 1:
            raise ValueError(f"plan_cap must be >= 1, got {plan_cap!r}")

    def prob(self, p_large: float, p_small: float) -> float:
        """``p_s + share * (p_l - p_s)``."""
        return p_small + self.share * (p_large - p_small)

    def draw(self, ok_large: bool, ok_small: bool, rng: np.random.Generator) -> tuple[bool, bool]:
        """Agreeing outcomes pass through; disagreements resolve toward the large model w.p. ``share``."""
        if ok_large == ok_small:
            return ok_large, False
        toward_large = bool(rng.random() < self.share)
        return (ok_large if toward_large else ok_small), False


class Cascade:
    """Small first, escalate to large when the modelled verifier rejects (see module docstring).

    Cascade has no plan, hence no ``plan_tokens`` attribute.

    Args:
        recall: P(escalate | small answer wrong) (assumption).
        false_escalation: P(escalate | small answer right) (assumption).
        mode: must be "cascade" when given.
    """

    mode = "cascade"

    def __init__(self, recall: float = 0.8, false_escalation: float = 0.1, mode: str = "cascade") -> None:
        _check_mode(mode, self.mode)
        self.recall = _unit("recall", recall)
        self.false_escalation = _unit("false_escalation", false_escalation)

    def escalation_prob(self, p_small: float) -> float:
        """Marginal P(escalated)."""
        return p_small * self.false_escalation + (1.0 - p_small) * self.recall

    def prob(self, p_large: float, p_small: float) -> float:
        """P(ok) when small and large outcomes are conditionally independent given the request."""
        return p_small * (1.0 - self.false_escalation) + self.escalation_prob(p_small) * p_large

    def draw(self, ok_large: bool, ok_small: bool, rng: np.random.Generator) -> tuple[bool, bool]:
        """Verifier decision, then the escalated (large) or kept (small) outcome."""
        escalate = bool(rng.random() < (self.false_escalation if ok_small else self.recall))
        return (ok_large if escalate else ok_small), escalate
