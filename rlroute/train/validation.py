"""Validation during training: run a policy for whole episodes of the validation split.

The loop is the evaluation harness's (one episode per seed, ``env.decision_context()`` → ``policy.act`` →
``env.step``, then ``env.drain()`` so every request's latency and outcome count), kept here in its
smallest form so the periodic evaluation inside ``model.learn`` stays cheap. The final comparison against
the baselines goes through ``rlroute.eval`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig

from rlroute.policies.base import Policy
from rlroute.train.callbacks import RouteStats
from rlroute.train.envs import EnvBuilder, default_builder


def run_episode(env: Any, policy: Policy, seed: int, stats: RouteStats) -> float:
    """Play one episode of ``env`` with ``policy`` from ``reset(seed=seed)``; return its total reward."""
    env.reset(seed=seed)
    policy.reset(np.random.default_rng(seed))
    total, done = 0.0, False
    while not done:
        ctx = env.decision_context()
        action = policy.act(ctx)
        _, reward, terminated, truncated, info = env.step(int(action))
        stats.add_actions([int(action)])
        stats.add_rewards([reward])
        stats.add_completions(info.get("completions", ()))
        total += float(reward)
        done = bool(terminated or truncated)
    stats.add_completions(env.drain())
    return total


def validate(
    policy: Policy,
    cfg: DictConfig,
    split: str = "val",
    seeds: Sequence[int] = (1000,),
    builder: EnvBuilder = default_builder,
) -> dict[str, float]:
    """Mean metrics of ``policy`` over one episode per seed on ``split``, keys prefixed ``eval/``.

    ``eval/reward`` is the mean reward per decision (the sweep objective); ``eval/episode_reward`` the mean
    episode return; the rest are :class:`RouteStats` metrics over all episodes together.
    """
    if not seeds:
        raise ValueError("validation needs at least one seed (agent.eval.seeds)")
    env = builder(cfg, split)
    stats = RouteStats()
    returns = [run_episode(env, policy, int(s), stats) for s in seeds]
    env.close()
    out = {f"eval/{k.split('/', 1)[1] if k.startswith('route/') else k.replace('/', '_')}": v
           for k, v in stats.summary().items()}
    out["eval/episode_reward"] = float(np.mean(returns))
    return out
