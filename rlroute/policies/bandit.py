"""``linucb``: a contextual bandit (disjoint LinUCB, Li et al. 2010) on the 224 observation features.

Per action ``a`` a ridge regression ``r ≈ θ_a · x`` of the request's own reward on ``x = [obs, 1]``; the
policy picks ``argmax_a θ_a · x + α sqrt(x' A_a⁻¹ x)`` over the allowed actions. ``A_a⁻¹`` is kept by
Sherman–Morrison updates (O(d²) per update, d = 225).

**Reward and delay.** The reward of a decision is the request's own reward
(:meth:`RewardConfig.request_reward`, as ``RoutingEnv`` credits it) and becomes known only when the request
completes: the policy keeps each decision's context until its credit arrives through :meth:`observe`
(``info["credits"]`` of the env step in which the request completed, which the evaluator passes on), and
updates only then. Nothing is learned from a decision whose request has not completed.

**Training and test.** ``prepare(cfg)`` warm-starts on the workload's *train* split: ``warm_episodes``
episodes of its own rollouts (exploring with its UCB bonus) in an env built from ``cfg`` with a seed
disjoint from evaluation's; with ``online: true`` (default) it keeps learning on the test episodes too,
each request's credit updating the model when the request completes, as a deployed bandit would (so
later test seeds see a model that has learned from earlier ones: the evaluator runs seeds in order).
``online: false`` freezes it after the warm start. ``reset`` forgets only in-flight decisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import COST_ORDER, allowed_actions
from rlroute.types import Action

WARM_SEED = 10_000  # warm-start episodes use seeds WARM_SEED + k, away from the evaluation seeds


class LinUCB(Policy):
    """Disjoint LinUCB over ``[obs, 1]``.

    Args:
        alpha: width of the confidence bonus (exploration); 0 = greedy ridge regression.
        ridge: prior precision λ (``A_a = λ I`` before any data).
        warm_episodes: train-split episodes of own rollouts in :meth:`prepare` (0 = no warm start).
        online: keep learning from credits during evaluation.
    """

    name = "linucb"

    def __init__(self, alpha: float = 0.5, ridge: float = 1.0, warm_episodes: int = 4, online: bool = True) -> None:
        if alpha < 0 or ridge <= 0 or warm_episodes < 0:
            raise ValueError(f"linucb: expected alpha >= 0, ridge > 0, warm_episodes >= 0; got {alpha}, {ridge}, "
                             f"{warm_episodes}")
        self.alpha, self.ridge, self.warm_episodes, self.online = float(alpha), float(ridge), int(warm_episodes), online
        self.d = 0
        self.a_inv = np.zeros((3, 0, 0))
        self.b = np.zeros((3, 0))
        self.updates = np.zeros(3, dtype=np.int64)
        self._pending: dict[int, tuple[int, np.ndarray]] = {}
        self.learning = True

    def _init(self, d: int) -> None:
        self.d = d
        self.a_inv = np.stack([np.eye(d) / self.ridge for _ in range(3)])
        self.b = np.zeros((3, d))

    def reset(self, rng: np.random.Generator) -> None:
        """Forget decisions still waiting for their credit (a new episode); keep the model."""
        self._pending.clear()

    def act(self, ctx: DecisionContext) -> Action:
        """The allowed action with the best upper confidence bound (ties: cheaper first)."""
        x = np.append(np.asarray(ctx.obs, dtype=np.float64), 1.0)
        if self.d != len(x):
            if self.d:
                raise ValueError(f"linucb: observation has {len(x) - 1} features, the model {self.d - 1}")
            self._init(len(x))
        ucb = self.ucb(x)
        mask = allowed_actions(ctx)
        if not mask.any():
            mask = np.ones(3, dtype=bool)
        best = max(ucb[a] for a in range(3) if mask[a])
        action = next(a for a in COST_ORDER if mask[a] and ucb[a] == best)
        if self.learning:
            self._pending[ctx.request.id] = (int(action), x)
        return action

    def ucb(self, x: np.ndarray) -> np.ndarray:
        """``θ_a · x + α sqrt(x' A_a⁻¹ x)`` for the three actions."""
        ax = self.a_inv @ x  # (3, d)
        theta_x = np.einsum("ad,ad->a", ax, self.b)  # θ_a·x = b_a' A_a⁻¹ x (A⁻¹ symmetric)
        width = np.sqrt(np.maximum(ax @ x, 0.0))
        return np.asarray(theta_x + self.alpha * width)

    def observe(self, credits: Iterable[Any]) -> None:
        """Update on completed requests: ``credits`` of ``(request_id, step, reward)`` (``info["credits"]``)."""
        if not self.learning:
            return
        for c in credits:
            got = self._pending.pop(int(c.request_id), None)
            if got is not None:
                self.update(got[0], got[1], float(c.reward))

    def update(self, action: int, x: np.ndarray, reward: float) -> None:
        """One ridge-regression update of ``action``'s model (Sherman–Morrison on ``A⁻¹``)."""
        a_inv = self.a_inv[action]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.b[action] += reward * x
        self.updates[action] += 1

    def prepare(self, cfg: Any) -> None:
        """Warm start on the train split (see the module docstring); then set online/frozen for evaluation."""
        if self.warm_episodes:
            from rlroute.env import build_env

            env = build_env(cfg, split="train")
            self.learning = True
            for k in range(self.warm_episodes):
                run_learning_episode(env, self, WARM_SEED + k)
            env.close()
        self.learning = self.online


def run_learning_episode(env: Any, policy: Any, seed: int) -> float:
    """One episode of ``policy`` in ``env``, passing each step's credits to ``policy.observe``; the return."""
    env.reset(seed=seed)
    policy.reset(np.random.default_rng(seed))
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, info = env.step(int(policy.act(env.decision_context())))
        policy.observe(info.get("credits", ()))
        total += float(r)
        done = bool(term or trunc)
    return total
