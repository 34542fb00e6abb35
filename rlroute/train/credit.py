"""Per-request credit for SB3: each request's own reward is moved back to the step of its decision.

With ``reward.credit: request`` (:mod:`rlroute.env.reward`) the env pays request ``r``'s own reward
(quality, billed cost, own e2e, own SLO miss) in the step where ``r`` *completes*, and lists it in
``info["credits"]`` with ``r``'s id; ``info["request_id"]`` names the request decided in each step. SB3's
rollout buffer takes a step's reward when the next step starts, so without help PPO would credit a
decision with whatever happened to complete after it -- the failure of ``../shared/DESIGN.md`` (PPO
overloading the large pool). This module is an SB3 extension, not a fork of PPO:

* :class:`CreditCallback` (``_on_step``) records, per env, the buffer position of each request's decision
  and adds every paid credit to the position of its own decision;
* :class:`CreditRolloutBuffer` / :class:`MaskableCreditRolloutBuffer` swap, in
  ``compute_returns_and_advantage``, each step's paid reward for the credit of its own request. SB3's
  timeout bootstrap (``gamma * V(terminal obs)``, added to the buffer after the callback ran) is kept.

Every credit is known when returns are computed because rollouts are aligned with episodes
(``agent.algo.n_steps`` a multiple of ``episode_length``, checked by :func:`check_alignment`) and the env
drains in-flight requests at truncation. A step whose request has no credit at rollout end (only when a
workload stream ends early and an episode straddles two rollouts) gets the mean credit of the rollout --
a neutral value, counted in ``train/uncredited_steps``; credits of decisions from an earlier rollout are
dropped and counted in ``train/late_credits``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig
from sb3_contrib.common.maskable.buffers import MaskableRolloutBuffer
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback

from rlroute.env.reward import RewardConfig


class _Credit:
    """What both credited buffers add to their SB3 base (a mixin; the base class comes second)."""

    buffer_size: int
    n_envs: int
    rewards: np.ndarray

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        shape = (self.buffer_size, self.n_envs)
        self.credit = np.zeros(shape, dtype=np.float32)  # own reward of the request decided at each step
        self.credited = np.zeros(shape, dtype=bool)
        self.paid = np.zeros(shape, dtype=np.float32)  # the env's reward of the step as SB3 received it
        self.shaping = np.zeros(shape, dtype=np.float32)  # training-only terms, e.g. a budget's Lagrangian penalty
        self.uncredited = 0

    def apply_credit(self) -> None:
        """Replace each step's paid reward by its own request's credit plus its shaping term (timeout
        bootstrap kept)."""
        known = self.credited
        self.uncredited = int((~known).sum())
        fill = float(self.credit[known].mean()) if known.any() else 0.0
        self.rewards += np.where(known, self.credit, fill) - self.paid + self.shaping

    def compute_returns_and_advantage(self, last_values: Any, dones: np.ndarray) -> None:
        self.apply_credit()
        super().compute_returns_and_advantage(last_values, dones)  # type: ignore[misc]


class CreditRolloutBuffer(_Credit, RolloutBuffer):
    """SB3's ``RolloutBuffer`` with per-request credit (see the module docstring)."""


class MaskableCreditRolloutBuffer(_Credit, MaskableRolloutBuffer):
    """sb3-contrib's ``MaskableRolloutBuffer`` with per-request credit (see the module docstring)."""


class CreditCallback(BaseCallback):
    """Routes each ``info["credits"]`` entry to the buffer position of its request's decision."""

    def __init__(self) -> None:
        super().__init__()
        self._pos: list[dict[int, int]] = []
        self.late = 0

    @property
    def buffer(self) -> Any:
        """The model's rollout buffer (a credited one: checked when the callback starts)."""
        return getattr(self.model, "rollout_buffer", None)

    def _init_callback(self) -> None:
        if not isinstance(self.buffer, _Credit):
            raise TypeError(
                f"CreditCallback needs a credited rollout buffer, got {type(self.buffer).__name__}; "
                "build the model with rollout_buffer_class from rlroute.train.credit.buffer_class")

    def _on_rollout_start(self) -> None:
        self._pos = [{} for _ in range(self.model.n_envs)]  # positions of an earlier rollout are gone
        self.late = 0

    def _on_step(self) -> bool:
        buf = self.buffer
        pos = buf.pos  # the position SB3 fills with this step after the callbacks
        rewards = self.locals["rewards"]
        for i, info in enumerate(self.locals["infos"]):
            where = self._pos[i]
            where[int(info["request_id"])] = pos
            buf.paid[pos, i] = rewards[i]
            for cr in info.get("credits", ()):
                p = where.pop(int(cr.request_id), None)
                if p is None:
                    self.late += 1
                    continue
                buf.credit[p, i] += cr.reward
                buf.credited[p, i] = True
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record("train/uncredited_steps", self.buffer.uncredited)
        self.logger.record("train/late_credits", self.late)


def credit_scheme(cfg: DictConfig) -> str:
    """``reward.credit`` of a composed config (``request`` when unset)."""
    from omegaconf import OmegaConf

    reward = cfg.get("reward")
    mapping = OmegaConf.to_container(reward, resolve=True) if reward is not None else {}
    return RewardConfig.from_mapping(mapping).credit  # type: ignore[arg-type]


def check_alignment(cfg: DictConfig) -> None:
    """Per-request credit needs rollouts aligned with episodes and raw rewards in the buffer.

    Raises:
        ValueError: ``agent.algo.n_steps`` is not a multiple of ``episode_length``, or
            ``agent.normalize.reward`` is on (the buffer would hold scaled rewards, credits are raw).
    """
    n_steps, length = int(cfg.agent.algo.n_steps), int(cfg.episode_length)
    if n_steps % length:
        raise ValueError(
            f"agent.algo.n_steps ({n_steps}) must be a multiple of episode_length ({length}) with "
            "reward.credit=request: a rollout must end where episodes end (they drain at truncation) so every "
            "request's own reward is known when returns are computed. Set agent.algo.n_steps=${episode_length} "
            "(the agent/ppo.yaml default) or reward.credit=park")
    if bool(cfg.agent.normalize.reward):
        raise ValueError("agent.normalize.reward must be false with reward.credit=request (credits are raw rewards)")


def buffer_class(algo_cls: type) -> type[RolloutBuffer]:
    """The credited buffer for an algorithm class: maskable for sb3-contrib's MaskablePPO."""
    from sb3_contrib import MaskablePPO

    return MaskableCreditRolloutBuffer if issubclass(algo_cls, MaskablePPO) else CreditRolloutBuffer
