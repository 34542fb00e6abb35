"""``rlroute bench train``: PPO env steps/s on the real routing env vs a trivial env of the same spaces.

Both runs use the same agent settings (``conf/agent``, the same vectorised env kind, VecNormalize, the
route-metrics callback, one torch thread) and the same number of steps, in one process, one after the
other. The trivial env returns a constant observation and reward with no work per step, so its time is
PPO's own (rollout inference + gradient updates + wrappers); the difference is what the simulator, the
workload and the features cost. Headline value: the simulator's share of training time,
``1 - trivial_seconds / real_seconds`` (target <= 25 %).

Usage::

    rlroute bench train [--steps 4096] [--experiment quickstart] [--out bench-results/train.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig

from rlroute.bench import emit
from rlroute.paths import CONF_DIR
from rlroute.types import Completion


class TrivialRoutingEnv(gym.Env):
    """Same observation/action spaces and episode length as ``RoutingEnv``, no simulation behind them."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, episode_length: int = 512) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(224,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.episode_length = int(episode_length)
        self._obs = np.zeros(224, dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode (the observation is constant)."""
        super().reset(seed=seed)
        self._t = 0
        return self._obs.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Count the decision; reward 0, no completions."""
        self._t += 1
        completions: list[Completion] = []
        return self._obs.copy(), 0.0, False, self._t >= self.episode_length, {"completions": completions}

    def action_masks(self) -> np.ndarray:
        """Every action allowed."""
        return np.ones(3, dtype=bool)


def trivial_builder(cfg: DictConfig, split: str) -> gym.Env:
    """Env builder for :func:`rlroute.train.envs.make_vec_env` (module-level so subprocesses can pickle it)."""
    del split
    return TrivialRoutingEnv(int(cfg.episode_length))


def time_training(cfg: DictConfig, steps: int, builder: Any) -> dict[str, float]:
    """Train ``steps`` env steps with ``cfg.agent`` on envs from ``builder``; return timings."""
    import torch
    from hydra.utils import instantiate
    from stable_baselines3.common.callbacks import CallbackList

    from rlroute.train.callbacks import RouteMetricsCallback
    from rlroute.train.envs import make_vec_env, wrap_normalize

    torch.set_num_threads(int(cfg.agent.get("torch_threads", 1)))
    t0 = time.perf_counter()
    venv = wrap_normalize(make_vec_env(cfg, "train", builder=builder), cfg)
    model = instantiate(cfg.agent.algo)(env=venv, seed=int(cfg.seed), verbose=0)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.learn(steps, callback=CallbackList([RouteMetricsCallback()]), progress_bar=False)
    seconds = time.perf_counter() - t1
    venv.close()
    return {"setup_seconds": setup, "seconds": seconds, "steps": float(model.num_timesteps),
            "steps_per_second": model.num_timesteps / seconds}


def compose(experiment: str, overrides: list[str]) -> DictConfig:
    """The root config with ``experiment`` and ``overrides`` (Hydra compose API)."""

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    conf = CONF_DIR
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose("config", overrides=[f"experiment={experiment}", *overrides])


def main(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and emit its JSON."""
    parser = argparse.ArgumentParser(prog="rlroute bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4096, help="env steps per run (default 4096)")
    parser.add_argument("--experiment", default="quickstart", help="experiment config whose agent is timed")
    parser.add_argument("--out", default=None, help="JSON output path (default bench-results/train.json)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. agent.n_envs=2")
    args = parser.parse_args(argv)
    cfg = compose(args.experiment, args.overrides)

    from rlroute.seeding import seed_everything
    from rlroute.train.envs import default_builder

    seed_everything(int(cfg.seed))
    trivial = time_training(cfg, args.steps, trivial_builder)
    seed_everything(int(cfg.seed))
    real = time_training(cfg, args.steps, default_builder)
    share = max(0.0, 1.0 - trivial["seconds"] / real["seconds"])
    result = {
        "value": round(100.0 * share, 2),
        "unit": "% of training time spent in the env (simulator + workload + features)",
        "target": "<= 25 %",
        "met": share <= 0.25,
        "real_env_steps_per_second": real["steps_per_second"],
        "trivial_env_steps_per_second": trivial["steps_per_second"],
        "real": real,
        "trivial": trivial,
        "experiment": args.experiment,
        "settings": {"n_envs": int(cfg.agent.n_envs), "vec_env": str(cfg.agent.vec_env),
                     "n_steps": int(cfg.agent.algo.n_steps), "batch_size": int(cfg.agent.algo.batch_size),
                     "n_epochs": int(cfg.agent.algo.n_epochs), "episode_length": int(cfg.episode_length),
                     "overrides": args.overrides},
    }
    return emit("train", result, args.out)
