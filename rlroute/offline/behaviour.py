"""Logging a behaviour policy in the simulator as a decision log (``rlroute.decision_log/1``).

Shared by ``rlroute bench ope`` (issue 17: log an incumbent with an exploration floor, estimate a candidate)
and ``rlroute train-offline`` (issue 19: the simulator-generated datasets offline learners train on):

* :class:`EpsilonFloor` — a deterministic policy with an exploration floor ``epsilon``: with probability
  ``1 - epsilon`` its own action, else a uniform draw over the allowed actions; the propensity of the executed
  action is exactly the probability it was drawn with, ``(1 - eps) [a == base] + eps [a allowed] / n_allowed``
  (``epsilon = 0``: a deterministic log, propensity 1, as the serving router logs).
* :func:`sim_record` — one decision-log record from a simulated decision and its completion, with the fields
  ``rlroute.serve.decisionlog.read_log`` requires; ``quality_label`` carries the simulator's quality where the
  caller has it (a serving log never does: ``docs/decision_log.md``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.policies.base import DecisionContext, Policy
from rlroute.serve.decisionlog import SCHEMA
from rlroute.types import ACTION_NAMES, Completion, Request


class EpsilonFloor:
    """``base`` with an exploration floor (module doc). ``draw`` returns ``(action, propensity, base action)``."""

    def __init__(self, base: Policy, epsilon: float, rng: np.random.Generator) -> None:
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon: expected a probability in [0, 1], got {epsilon!r}")
        self.base, self.epsilon, self.rng = base, float(epsilon), rng

    def draw(self, ctx: DecisionContext) -> tuple[int, float, int]:
        mask = ctx.mask if ctx.mask is not None else np.ones(len(ACTION_NAMES), dtype=bool)
        base = int(self.base.act(ctx))
        allowed = np.flatnonzero(mask)
        eps = self.epsilon
        a = int(self.rng.choice(allowed)) if eps > 0 and self.rng.random() < eps else base
        return a, (1 - eps) * (a == base) + eps * (a in allowed) / len(allowed), base


def sim_record(request_id: int | str, obs: np.ndarray, action: int, propensity: float, c: Completion,
               slo_ok: bool, quality_label: float | None = None, arrival_s: float = 0.0, input_len: int = 1,
               feature_schema: str | None = None, policy: str = "simulator", request: Request | None = None
               ) -> dict[str, Any]:
    """A ``rlroute.decision_log/1`` record of one simulated decision (outcome from its completion). With
    ``request`` the record carries what a router logs of it (arrival, lengths, cap, prefix blocks, session and
    turn: what the replay twin, :mod:`rlroute.workload.replay`, needs); without, placeholders."""
    q = request
    return {"schema": SCHEMA, "arrival_s": float(q.arrival if q else arrival_s), "request_id": str(request_id),
            "input_len": int(q.input_len if q else input_len), "max_new_tokens": int((q.max_new_tokens or q.output_len) if q else 1),
            "block_size": int(q.block_size if q else 64), "blocks": list(q.blocks) if q else [],
            "session": q.session_id if q else None, "turn": int(q.turn) if q else 0, "feature_schema": feature_schema,
            "obs": np.asarray(obs, dtype=np.float32).tolist(), "action": int(action),
            "action_name": ACTION_NAMES[int(action)], "source": "policy", "policy": policy,
            "propensity": float(propensity), "quality_label": quality_label,
            "outcome": {"status": 500 if c.failed else 200, "cost": float(c.cost), "e2e_s": float(c.e2e),
                        "ttft_s": float(c.ttft), "tpot_s": float(c.tpot), "slo_ok": bool(slo_ok),
                        "prompt_tokens": int(c.prompt_tokens), "cached_tokens": int(c.cached_tokens),
                        "output_tokens": int(c.output_tokens), "pool": "+".join(c.pools)}}


def write_records(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write ``records`` as JSONL to ``path`` (parents created); the number written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
            n += 1
    return n
