"""Domain randomisation: a routing env that draws its workload, load, pool sizes and prices per episode.

:class:`RandomisedEnv` is an env *factory* target (``rlroute.train.trainer.train_run(builder=...)``), not a
simulator change: it holds one :class:`~rlroute.env.routing.RoutingEnv` per member workload (built once,
lazily: building fits the quality model and loads the data) and, at every ``reset``, draws from its own
``np_random``

* the member (a composed config: workload, quality, cluster, reward), uniformly;
* a load level: the member workload's ``rate`` times a factor uniform in ``rate_scale`` (a member whose
  rate is ``null`` keeps its trace's native timing: a trace's load is not rescaled, it is what it is);
* pool sizes: each pool's ``instances`` drawn from ``instances[pool]`` (a new cluster factory, cheap);
* prices: the reward's ``cost_weight`` times a factor log-uniform in ``cost_scale``. The observation
  carries no price feature, so the policy learns a price-robust rule rather than a price-conditioned one
  (an assumption of this design, stated here and in the study README).

All members share the observation and action spaces (one feature schema), so one PPO policy trains over
all of them. ``info["dr"]`` of ``reset`` records what was drawn.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig, OmegaConf

from rlroute.env.build import build_env, cluster_factory
from rlroute.env.routing import RoutingEnv
from rlroute.train.envs import training_env_cfg
from rlroute.types import Completion

_SEED_HIGH = 2**31


def _range(value: Sequence[float], key: str, positive: bool = True) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not lo <= hi or (positive and lo <= 0):
        raise ValueError(f"dr.{key}: expected [low, high] with 0 < low <= high, got {list(value)}")
    return lo, hi


class RandomisedEnv(gym.Env):  # type: ignore[type-arg]
    """A routing env whose member workload, load, pool sizes and prices are drawn per episode (module doc).

    Args:
        members: composed root configs, one per member workload (e.g. from ``conf/workload`` overrides).
        split: workload split of every member (``train`` for training, ``val`` for validation).
        rate_scale: ``[low, high]`` factor on the member's ``workload.rate``.
        instances: pool name → instance counts to draw from (``{}``: the member's own sizes).
        cost_scale: ``[low, high]`` factor on ``reward.cost_weight`` (log-uniform).
        seed: seeds ``np_random`` before the first ``reset``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        members: Sequence[DictConfig],
        split: str = "train",
        rate_scale: Sequence[float] = (1.0, 1.0),
        instances: Mapping[str, Sequence[int]] | None = None,
        cost_scale: Sequence[float] = (1.0, 1.0),
        seed: int = 0,
    ) -> None:
        if not members:
            raise ValueError("RandomisedEnv: expected at least one member config")
        self.members, self.split = list(members), split
        self.rate_scale = _range(rate_scale, "rate_scale")
        self.cost_scale = _range(cost_scale, "cost_scale")
        self.instances = {str(p): [int(n) for n in ns] for p, ns in (instances or {}).items()}
        for pool, counts in self.instances.items():
            if not counts or min(counts) < 1:
                raise ValueError(f"dr.instances.{pool}: expected a non-empty list of counts >= 1, got {counts}")
        self._envs: dict[int, RoutingEnv] = {}
        self._base: dict[int, tuple[float | None, Any, Any]] = {}
        first = self._member(0)
        self.observation_space, self.action_space = first.observation_space, first.action_space
        self._env: RoutingEnv = first
        self.np_random, _ = gym.utils.seeding.np_random(seed)

    def _member(self, k: int) -> RoutingEnv:
        if k not in self._envs:
            env = build_env(self.members[k], split=self.split)
            rate = getattr(env.workload, "rate", None)
            self._base[k] = (float(rate) if rate is not None else None, env.reward_cfg, env.cluster_factory)
            self._envs[k] = env
        return self._envs[k]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Draw a member, load, pool sizes and prices; reset that member's env (module doc)."""
        super().reset(seed=seed)
        g = self.np_random
        k = int(g.integers(len(self.members)))
        env = self._member(k)
        rate, reward, factory = self._base[k]
        drawn: dict[str, Any] = {"member": k}
        if rate is not None and hasattr(env.workload, "rate"):
            scale = float(g.uniform(*self.rate_scale))
            env.workload.rate = rate * scale  # type: ignore[attr-defined]
            drawn["rate"] = rate * scale
        cost = float(math.exp(g.uniform(math.log(self.cost_scale[0]), math.log(self.cost_scale[1]))))
        env.reward_cfg = dataclasses.replace(reward, cost_weight=reward.cost_weight * cost)
        drawn["cost_weight"] = env.reward_cfg.cost_weight
        if self.instances:
            sizes = {pool: int(g.choice(counts)) for pool, counts in self.instances.items()}
            cluster = OmegaConf.create(OmegaConf.to_container(self.members[k].cluster, resolve=True))
            for pool, n in sizes.items():
                if pool not in cluster.pools:
                    raise ValueError(f"dr.instances: member {k} has no pool {pool!r} (pools: {list(cluster.pools)})")
                cluster.pools[pool].instances = n
            env.cluster_factory = cluster_factory(cluster)
            drawn["instances"] = sizes
        else:
            env.cluster_factory = factory
        self._env = env
        obs, info = env.reset(seed=int(g.integers(_SEED_HIGH)), options=options)
        return obs, {**info, "dr": drawn}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step the current member's env."""
        return self._env.step(action)

    # The hooks the evaluation harness and maskable PPO call on a routing env, passed to the current member.
    def action_masks(self) -> np.ndarray:
        """The current member's action mask."""
        return self._env.action_masks()

    def decision_context(self) -> Any:
        """The current member's decision context."""
        return self._env.decision_context()

    def drain(self) -> list[Completion]:
        """Finish the current member's in-flight requests."""
        return self._env.drain()

    def close(self) -> None:
        """Close every member env."""
        for env in self._envs.values():
            env.close()


@dataclasses.dataclass
class RandomisedBuilder:
    """An env builder ``(cfg, split) -> RandomisedEnv`` over ``members`` with the ``dr`` ranges, for
    ``train_run(builder=...)`` (the run's own ``cfg`` only supplies the seed). A class, not a closure, so a
    ``SubprocVecEnv`` can pickle it."""

    members: list[DictConfig]
    dr: dict[str, Any]

    def __call__(self, cfg: DictConfig, split: str) -> RandomisedEnv:
        dr = self.dr
        # Training envs get the training-time reward (``agent.quality_baseline``), as ``train_run`` gives a
        # single env through ``training_env_cfg``; validation keeps each member's own reward.
        members = [training_env_cfg(m) for m in self.members] if split == "train" else self.members
        return RandomisedEnv(members, split, dr.get("rate_scale", (1.0, 1.0)), dr.get("instances") or {},
                             dr.get("cost_scale", (1.0, 1.0)), int(cfg.get("seed", 0)))
