"""Checks on references: does the reward oracle really bound every policy, and the share of the gap recovered.

The reward oracle (``reward_oracle``, :mod:`rlroute.policies.forked`) is greedy per request: it forks the
simulator and picks the best *own* reward of each request. Under congestion that is not an upper bound —
a request that takes the large pool's last free slot can delay the requests after it by more than it
gains. So every report that divides by the oracle's gap first checks, per seed (same requests for every
policy), that the oracle scored at least as much as every policy; where it does not, the gap is not a
bound and ``gap_recovered`` is ``None`` (null in JSON), with the violations named.

Compare on the realised quality (``reward.quality: ok``): the oracle chooses with the realised outcome,
and a reward that scores quality by its expectation ``p`` under-credits exactly the choices hindsight makes
(the expectation of ``ok`` given that hindsight picked the action is not ``p``). For policies that do not
see the outcome the two rewards agree in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ORACLE = "reward_oracle"


@dataclass(frozen=True)
class Violation:
    """One seed on which a policy out-scored the oracle."""

    policy: str
    seed: int
    oracle: float
    policy_value: float


@dataclass(frozen=True)
class Dominance:
    """Result of :func:`oracle_dominates`: ``ok`` when the oracle scored at least every policy on every
    seed; ``violations`` lists where it did not; ``reason`` says why in words (empty when ``ok``)."""

    ok: bool
    violations: list[Violation] = field(default_factory=list)
    reason: str = ""


def oracle_dominates(
    per_seed: Mapping[str, Mapping[int, float] | Sequence[float]],
    oracle: str = ORACLE,
    tol: float = 0.0,
) -> Dominance:
    """Check that ``oracle`` scores at least as high as every other policy on every seed.

    Args:
        per_seed: policy -> its score per test seed, either ``{seed: score}`` or a sequence aligned by
            position (seed index). Every policy must cover the oracle's seeds (paired comparison).
        oracle: the oracle's key in ``per_seed``.
        tol: slack per seed (a policy may exceed the oracle by up to ``tol`` and still count as bounded).

    Raises:
        KeyError: ``oracle`` is missing, or a policy lacks one of the oracle's seeds.
    """
    if oracle not in per_seed:
        raise KeyError(f"oracle_dominates: no scores for the oracle {oracle!r}; policies: {sorted(per_seed)}")
    ref = _by_seed(per_seed[oracle])
    violations: list[Violation] = []
    for name, scores in per_seed.items():
        if name == oracle:
            continue
        got = _by_seed(scores)
        missing = sorted(set(ref) - set(got))
        if missing:
            raise KeyError(f"oracle_dominates: policy {name!r} has no score for seed(s) {missing} (scores must be paired)")
        violations += [Violation(name, s, ref[s], got[s]) for s in sorted(ref) if got[s] > ref[s] + tol]
    if not violations:
        return Dominance(True)
    worst = max(violations, key=lambda v: v.policy_value - v.oracle)
    reason = (f"{oracle} is not an upper bound: {len(violations)} (policy, seed) pair(s) score higher, worst "
              f"{worst.policy} on seed {worst.seed} ({worst.policy_value:.4f} > {worst.oracle:.4f}); a greedy "
              "per-request fork ignores the delay a choice imposes on later requests (congestion)")
    return Dominance(False, violations, reason)


def gap_recovered(policy: float, baseline: float, oracle: float, dominance: Dominance | None) -> float | None:
    """``(policy - baseline) / (oracle - baseline)``: the share of the baseline → oracle gap recovered.

    ``None`` when the oracle does not dominate (``dominance.ok`` False: the gap is not a bound) or when
    there is no gap (``oracle <= baseline``). ``dominance=None`` means "not checked" and is an error:
    the check is what makes the number meaningful.
    """
    if dominance is None:
        raise ValueError("gap_recovered: pass the oracle_dominates(...) result for these scores")
    if not dominance.ok:
        return None
    gap = oracle - baseline
    if not math.isfinite(gap) or gap <= 1e-12:
        return None
    return (policy - baseline) / gap


def per_seed_rewards(results: Mapping[str, Any], key: str = "reward") -> dict[str, dict[int, float]]:
    """``{policy: {seed: metric}}`` from :class:`~rlroute.eval.run.EvalResult` objects keyed by policy
    (seeds read from their records, in the order of ``per_seed``)."""
    out: dict[str, dict[int, float]] = {}
    for name, res in results.items():
        seeds = list(dict.fromkeys(int(r["seed"]) for r in res.records))
        if len(seeds) != len(res.per_seed):
            raise ValueError(f"per_seed_rewards: {name}: {len(seeds)} seeds in records, {len(res.per_seed)} in per_seed")
        out[name] = {s: float(m[key]) for s, m in zip(seeds, res.per_seed, strict=True)}
    return out


def _by_seed(scores: Mapping[int, float] | Sequence[float]) -> dict[int, float]:
    if isinstance(scores, Mapping):
        return {int(k): float(v) for k, v in scores.items()}
    return {i: float(v) for i, v in enumerate(scores)}
