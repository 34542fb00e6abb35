"""Vectorised routing environments for training: the one place that turns a composed cfg into a VecEnv.

Every training env is ``rlroute.env.build_env(cfg, split)`` wrapped in SB3's ``Monitor`` (episode reward
and length for ``rollout/``), stacked in a ``DummyVecEnv`` (in-process; best on a 2-core machine because
the simulator step is short) or a ``SubprocVecEnv`` (one process per env; pays off when the simulator step
dominates and cores are free), then wrapped in ``VecNormalize``. The env builder is a parameter so the
training benchmark can run the same machinery on a trivial env of the same spaces.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from rlroute.train.normalize import RangeVecNormalize

EnvBuilder = Callable[[DictConfig, str], gym.Env]

# Registry of vector-env kinds (`agent.vec_env`); SubprocVecEnv uses forkserver so torch threads in the
# parent are not forked mid-state.
VEC_ENVS: dict[str, Callable[[list[Callable[[], gym.Env]]], VecEnv]] = {
    "dummy": DummyVecEnv,
    "subproc": functools.partial(SubprocVecEnv, start_method="forkserver"),
}


def default_builder(cfg: DictConfig, split: str) -> gym.Env:
    """Build the real routing env (imported lazily so subprocess workers import it themselves)."""
    from rlroute.env import build_env

    return build_env(cfg, split=split)


def _make_one(cfg_container: dict[str, Any], split: str, builder: EnvBuilder) -> gym.Env:
    # Receives a plain dict (picklable, interpolations resolved) so it also works in a subprocess.
    cfg = OmegaConf.create(cfg_container)
    return Monitor(builder(cfg, split))


def plain_cfg(cfg: DictConfig) -> dict[str, Any]:
    """The cfg as a resolved plain dict without Hydra's runtime node (safe to pickle and re-create)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
        if "out_dir" in cfg:
            try:
                cfg.out_dir = cfg.out_dir
            except InterpolationResolutionError:  # composed outside a Hydra run: no output dir
                cfg.out_dir = None
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container  # type: ignore[return-value]


def training_env_cfg(cfg: DictConfig) -> DictConfig:
    """The config the *training* envs run with: ``cfg`` with ``agent.quality_baseline`` (``none`` | ``small``)
    moved into ``reward.quality_baseline`` (see :mod:`rlroute.env.reward`). Validation and evaluation keep
    ``cfg``'s reward, so every reported reward is the scenario's own."""
    baseline = str((cfg.get("agent") or {}).get("quality_baseline") or "none")
    if baseline == "none":
        return cfg
    out = cfg.copy()
    with open_dict(out):
        out.reward.quality_baseline = baseline
    return out


def make_vec_env(
    cfg: DictConfig,
    split: str = "train",
    *,
    n_envs: int | None = None,
    vec_env: str | None = None,
    builder: EnvBuilder = default_builder,
) -> VecEnv:
    """Stack ``n_envs`` Monitor-wrapped routing envs on ``split`` (defaults from ``cfg.agent``).

    Raises:
        ValueError: ``agent.vec_env`` names no known kind, or ``agent.n_envs`` < 1.
    """
    n = int(n_envs if n_envs is not None else cfg.agent.n_envs)
    kind = str(vec_env if vec_env is not None else cfg.agent.vec_env)
    if n < 1:
        raise ValueError(f"agent.n_envs must be >= 1, got {n}")
    if kind not in VEC_ENVS:
        raise ValueError(f"agent.vec_env must be one of {sorted(VEC_ENVS)}, got {kind!r}")
    container = plain_cfg(cfg)
    fns: list[Callable[[], gym.Env]] = [functools.partial(_make_one, container, split, builder) for _ in range(n)]
    return VEC_ENVS[kind](fns)


def wrap_normalize(venv: VecEnv, cfg: DictConfig) -> VecNormalize:
    """Wrap ``venv`` in :class:`RangeVecNormalize` with ``cfg.agent.normalize`` (obs always tracked, reward
    optional): ``VecNormalize`` that clips each feature to its training range before standardising, so a
    feature constant in training cannot become ±``clip_obs`` at run time (:mod:`rlroute.train.normalize`)."""
    norm = cfg.agent.normalize
    return RangeVecNormalize(
        venv,
        norm_obs=bool(norm.obs),
        norm_reward=bool(norm.reward),
        clip_obs=float(norm.clip_obs),
        clip_reward=float(norm.clip_reward),
        gamma=float(cfg.agent.algo.gamma),
    )


def load_normalize(path: str | Path) -> VecNormalize:
    """Load saved VecNormalize statistics without an env (for acting on single observations)."""
    import pickle

    with open(path, "rb") as fh:
        stats = pickle.load(fh)
    if not isinstance(stats, VecNormalize):
        raise ValueError(f"{path}: expected pickled VecNormalize statistics, got {type(stats).__name__}")
    stats.training = False
    stats.norm_reward = False
    return stats
