"""The routing reward: ``w_q*quality - w_c*cost - w_l*latency_integral - w_slo*slo_violations`` per step.

* **quality**: the chosen action's success probability ``request.quality.p[action]`` (``quality: p``,
  default: an unbiased, lower-variance estimate of the drawn outcome) or the drawn outcome
  ``request.quality.ok[action]`` as 0/1 (``quality: ok``). Known at decision time in the simulator.
* **cost** (USD): ``cluster.cost_model.request_cost`` of the stages the action implies, with the expected
  cached tokens = the best prefix match over the pool's available instances (SGLang's cache-aware rule
  sends a request to its best match when the match ratio exceeds the threshold; an approximation when it
  does not), and the request's true ``output_len`` (the simulator knows it).
* **latency**: Park-style integral of the number of requests in the system over the step, in
  request-seconds; summed over an episode it is the total time requests spent in the system inside it.
* **slo_violations**: completions in the step that missed the TTFT or TPOT SLO, or failed. A hybrid's TTFT
  includes the large model's plan, so ``slo_ttft_hybrid_s`` (optional; ``None`` = ``slo_ttft_s``) lets a
  preset give plan-and-execute its own TTFT target instead of counting nearly every hybrid as a miss.

Weights and SLOs come from ``conf/reward/*.yaml`` (plain parameters, see default.yaml for the reasoning).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rlroute.types import Action, Completion

QUALITY_SIGNALS = ("p", "ok")


@dataclass(frozen=True, slots=True)
class RewardConfig:
    """Reward weights and SLOs (see the module docstring and ``conf/reward/default.yaml``)."""

    quality_weight: float = 1.0
    cost_weight: float = 150.0
    latency_weight: float = 0.01
    slo_weight: float = 0.2
    slo_ttft_s: float = 2.0
    slo_tpot_s: float = 0.1
    quality: str = "p"
    slo_ttft_hybrid_s: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "slo_ttft_hybrid_s" and v is None:
                continue
            if f.name == "quality":
                if v not in QUALITY_SIGNALS:
                    raise ValueError(f"reward.quality must be one of {QUALITY_SIGNALS}, got {v!r}")
            elif not isinstance(v, int | float) or v < 0:
                raise ValueError(f"reward.{f.name} must be a number >= 0, got {v!r}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> RewardConfig:
        """Build from a ``reward`` config mapping; unknown keys are an error naming them."""
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown reward config key(s) {unknown}; expected some of {sorted(known)}")
        kwargs: dict[str, Any] = {
            k: (str(v) if k == "quality" else None if v is None else float(v)) for k, v in cfg.items()
        }
        return cls(**kwargs)

    def violates(self, c: Completion) -> bool:
        """True when a completion failed or missed the TTFT (hybrid: ``slo_ttft_hybrid_s``) or TPOT SLO."""
        ttft_slo = self.slo_ttft_s
        if self.slo_ttft_hybrid_s is not None and c.action == Action.HYBRID:
            ttft_slo = self.slo_ttft_hybrid_s
        return c.failed or c.ttft > ttft_slo or c.tpot > self.slo_tpot_s

    def request_reward(self, quality: float, cost: float, c: Completion) -> float:
        """One request's own reward: its quality term and decision-time cost, its own time in the system
        (``c.e2e``, request-seconds) and whether *it* violated the SLO.

        Summed over the requests of a drained episode, the latency part equals the Park-style integral
        (total time in system), but each decision is credited only with its own request's outcome. This
        is the contract every per-request consumer uses (credited training reward, hindsight oracle,
        look-ahead, supervised labels), so they all optimise the same number.
        """
        return self.reward(quality, cost, c.e2e, int(self.violates(c)))

    def reward(self, quality: float, cost: float, latency: float, violations: int) -> float:
        """Combine the four raw terms."""
        return (
            self.quality_weight * quality
            - self.cost_weight * cost
            - self.latency_weight * latency
            - self.slo_weight * violations
        )
