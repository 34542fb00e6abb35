"""What-if rewards of one routing decision, by forking the simulator at the decision.

For the env's pending request and each allowed action: restore a copy of the cluster
(:class:`rlroute.cluster.sim.fork.Snapshot`, taken once per decision), submit the request with that action,
and run the copy until it has completed (no later arrivals: as ``drain`` would, stopping once it is done). The action's score is the per-request reward contract,
:meth:`RewardConfig.request_reward` of the env's reward config:

* quality term: ``reward`` (the bound env's own signal, ``reward.quality``: what the evaluator scores) for
  the reward oracle, ``p`` (the quality model's success probability, known before the answer) for the
  look-ahead, or ``ok`` (the realised outcome, 0/1); 0 when the request failed;
* cost: the request's billed cost in the fork; latency and SLO: its own e2e and SLO outcome in the fork —

exactly what ``RoutingEnv`` credits a completed request (``RoutingEnv._pay``), so a reference's choice is
scored by the same number the evaluator sums.

**Later arrivals.** With ``horizon = 0`` (default) nothing arrives in the fork after the request: the
request meets the queues, batches and caches present at the decision, but not the load that arrives
while it is served (optimistic under heavy load). With ``horizon = h > 0`` the next ``h`` arrivals of the
env's stream (:meth:`RoutingEnv.upcoming`, hindsight about *when* and *what* arrives) are submitted at
their arrival times, routed by the reference ``rule`` (the seed heuristic by default; it reads only typed
state, so no features are computed in the fork); the score then adds their credits, so the action's
congestion externality on the next ``h`` requests counts. Neither variant is an upper bound under congestion: a greedy per-request
choice can hurt later requests beyond the horizon (see :func:`rlroute.eval.references.oracle_dominates`).

Needs the simulator: the env's cluster must be copyable by :mod:`rlroute.cluster.sim.fork`, and requests
must carry quality draws. References using this are not deployable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlroute.cluster.sim.fork import Snapshot
from rlroute.env.reward import RewardConfig
from rlroute.policies.base import DecisionContext, Policy
from rlroute.types import Action, Completion, Request

QUALITY_TERMS = ("reward", "ok", "p")
MAX_WINDOW_S = 2.0**20  # stop stepping after ~12 days of simulated time and drain (a paused pool)


def _quality(req: Request, a: Action, term: str) -> float:
    q = req.quality
    if q is None:
        raise ValueError(f"what-if: request {req.id} has no quality draw; forked references need the "
                         "simulator's per-action outcomes")
    return float(q.ok[a]) if term == "ok" else float(q.p[a])


class WhatIf:
    """Per-action what-if rewards of the pending decision of a bound :class:`~rlroute.env.RoutingEnv`.

    Args:
        quality: ``reward`` (the env's ``reward.quality``, resolved at :meth:`bind`), ``ok`` (hindsight
            outcome) or ``p`` (expected quality) as the quality term.
        horizon: later arrivals simulated in each fork (see the module docstring); 0 = none.
        rule: policy routing those later arrivals (a registry name); only used when ``horizon > 0``.
    """

    def __init__(self, quality: str = "ok", horizon: int = 0, rule: str = "heuristic") -> None:
        if quality not in QUALITY_TERMS:
            raise ValueError(f"what-if quality must be one of {QUALITY_TERMS}, got {quality!r}")
        if horizon < 0:
            raise ValueError(f"what-if horizon must be >= 0, got {horizon}")
        self.quality_term = quality
        self.quality = quality
        self.horizon = int(horizon)
        self.rule_name = rule
        self._rule: Policy | None = None
        self.env: Any = None

    def bind(self, env: Any) -> None:
        """Read decisions, the cluster, the reward config and the price of actions from ``env``."""
        env = getattr(env, "unwrapped", env)
        for attr in ("cluster", "reward_cfg", "upcoming"):
            if not hasattr(env, attr):
                raise TypeError(f"what-if: {type(env).__name__} has no {attr!r}; bind a RoutingEnv")
        self.env = env
        self.quality = str(env.reward_cfg.quality) if self.quality_term == "reward" else self.quality_term
        if self.horizon and self._rule is None:
            from rlroute.policies.registry import make_policy

            self._rule = make_policy(self.rule_name)

    def rewards(self, ctx: DecisionContext) -> np.ndarray:
        """``float[3]``: the score of each action for ``ctx.request`` (NaN where ``ctx.mask`` forbids it)."""
        env = self.env
        if env is None:
            raise RuntimeError("what-if: no env bound; the evaluator calls bind_env(env) before acting")
        req = ctx.request
        pending = env.decision_context().request
        if pending.id != req.id:
            raise RuntimeError(f"what-if: context request {req.id} is not the env's pending request {pending.id}")
        allowed = ctx.mask if ctx.mask is not None else np.ones(3, dtype=bool)
        later = env.upcoming(self.horizon) if self.horizon else []
        snap = Snapshot(env.cluster)
        rc = env.reward_cfg
        out = np.full(3, np.nan)
        for a in Action:
            if not allowed[a]:
                continue
            sim = snap.restore()
            sim.submit(req, a)
            done = self._run(sim, req, later)
            score = credit(rc, _quality(req, a, self.quality), done[req.id])
            for r, la in later_actions(done, later):
                score += credit(rc, _quality(r, la, self.quality), done[r.id])
            out[a] = score
        return out

    def _run(self, sim: Any, req: Request, later: list[Request]) -> dict[int, Completion]:
        done: dict[int, Completion] = {}
        rule = self._rule
        for r in later:
            done.update((c.request_id, c) for c in sim.advance(r.arrival))
            assert rule is not None
            sim.submit(r, int(rule.act(_context(sim, r))))
        # Advance in doubling windows until the scored requests completed (the events up to then are the
        # ones a full drain would run first, so outcomes are identical); the others' tails are skipped.
        want = {req.id, *(r.id for r in later)}
        dt = 1.0
        while not want <= done.keys() and sim.in_flight and dt < MAX_WINDOW_S:
            done.update((c.request_id, c) for c in sim.advance(sim.now + dt))
            dt *= 2.0
        if not want <= done.keys():
            done.update((c.request_id, c) for c in sim.drain())  # never finishes otherwise: drain fails it
        return done


def credit(rc: RewardConfig, quality: float, c: Completion) -> float:
    """A completed request's own reward as ``RoutingEnv`` credits it: quality 0 when it failed, billed cost."""
    return rc.request_reward(0.0 if c.failed else quality, c.cost, c)


def later_actions(done: dict[int, Completion], later: list[Request]) -> list[tuple[Request, Action]]:
    """The later arrivals of a fork with the action each was routed with (read from its completion)."""
    return [(r, Action(done[r.id].action)) for r in later if r.id in done]


def _context(sim: Any, req: Request) -> DecisionContext:
    """A decision context for a later arrival in a fork: typed state and matches, the mask derived from
    the state (``mask=None``); no feature vector (the rule must read typed fields only, as the seed
    heuristic does)."""
    return DecisionContext(request=req, state=sim.state(), matches=sim.prefix_match(req),
                           obs=np.zeros(0, dtype=np.float32), mask=None)
