"""The routing reward: ``w_q*quality - w_c*cost - w_l*latency - w_slo*slo_violations``.

How the terms reach a step is the ``credit`` scheme (``reward.credit``):

* ``request`` (default): **each request's own reward** (:meth:`RewardConfig.request_reward`: its quality,
  its billed cost, its own time in the system ``e2e`` and whether *it* missed the SLO) is paid when the
  request completes, in the step where it completes; the episode is drained at truncation so the final
  step pays every request still in flight. ``info["credits"]`` says which decision each paid reward
  belongs to, and training moves it there (:mod:`rlroute.train.credit`), so every decision is credited
  with exactly its own outcome. Summed over a drained episode the step rewards equal the sum of
  ``request_reward`` over its requests.
* ``park``: the v0 scheme, kept to reproduce ``experiments/scenarios/reward_credit.md`` (where it loses):
  quality and decision-time cost of the step's own decision, minus the Park-style latency integral and the
  SLO misses of whatever completed during the step (other requests' outcomes).

The terms:

* **quality**: the chosen action's success probability ``request.quality.p[action]`` (``quality: p``,
  default: an unbiased, lower-variance estimate of the drawn outcome) or the drawn outcome
  ``request.quality.ok[action]`` as 0/1 (``quality: ok``). Known at decision time in the simulator.
  A failed request's quality is 0 under ``credit: request`` (it returned no answer).
* **quality_baseline** (``none`` by default; training sets ``small`` through ``agent.quality_baseline``):
  ``small`` subtracts the small model's quality of the *same* request from the quality term, so a request
  pays ``q(action) - q(small)``: its gain from the model it was given. The subtracted amount does not
  depend on any action (the request stream is exogenous), so every policy's return moves by the same
  amount and the optimal policy is unchanged; what changes is the variance: with gamma > 0 a return sums
  the rewards of the ~1/(1-gamma) requests that follow, and their base quality (p spreads over ~0.3-0.9)
  is noise that no action explains and that swamps one request's gain (~0.14 on average). The reward
  reported by evaluation never carries it.
* **cost** (USD): under ``credit: request`` the completion's billed cost (``Completion.cost``, the cost
  model applied to the stages it actually ran with their actual cached tokens). Under ``park``,
  ``cluster.cost_model.request_cost`` of the stages the action implies, with the expected
  cached tokens = the best prefix match over the pool's available instances (SGLang's cache-aware rule
  sends a request to its best match when the match ratio exceeds the threshold; an approximation when it
  does not), and the request's true ``output_len`` (the simulator knows it).
* **latency** (request-seconds): under ``request`` the request's own ``e2e``; under ``park`` the integral of the number of requests in the system over the step, in
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
CREDIT_SCHEMES = ("request", "park")
QUALITY_BASELINES = ("none", "small")
_STR_FIELDS = ("quality", "credit", "quality_baseline")


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
    credit: str = "request"
    quality_baseline: str = "none"

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "slo_ttft_hybrid_s" and v is None:
                continue
            if f.name == "quality":
                if v not in QUALITY_SIGNALS:
                    raise ValueError(f"reward.quality must be one of {QUALITY_SIGNALS}, got {v!r}")
            elif f.name == "credit":
                if v not in CREDIT_SCHEMES:
                    raise ValueError(f"reward.credit must be one of {CREDIT_SCHEMES}, got {v!r}")
            elif f.name == "quality_baseline":
                if v not in QUALITY_BASELINES:
                    raise ValueError(f"reward.quality_baseline must be one of {QUALITY_BASELINES}, got {v!r}")
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
            k: (str(v) if k in _STR_FIELDS else None if v is None else float(v)) for k, v in cfg.items()
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
