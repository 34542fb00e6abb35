"""Per-request credit in SB3 training: each buffer step holds its own request's reward (rlroute.train.credit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from rlroute.train.credit import (
    CreditCallback,
    CreditRolloutBuffer,
    MaskableCreditRolloutBuffer,
    buffer_class,
    check_alignment,
)
from rlroute.train.envs import make_vec_env

CONF = Path(__file__).resolve().parents[1] / "conf"
LENGTH = 48


def cfg_of(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"episode_length={LENGTH}", "agent.n_envs=2", "agent.algo.batch_size=48",
                                            "agent.algo.n_epochs=1", "agent.algo.gamma=0.0",
                                            "+agent.algo.policy_kwargs.net_arch=[8]", *overrides])


class Recorder(BaseCallback):
    """Keeps every step's infos (what the env paid and for which decision step)."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[list[dict[str, Any]]] = []

    def _on_step(self) -> bool:
        self.infos.append(list(self.locals["infos"]))
        return True


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_each_buffer_step_holds_its_own_requests_reward(algo: str) -> None:
    cfg = cfg_of(f"agent={algo}")
    assert int(cfg.agent.algo.n_steps) == LENGTH  # the default: one episode per rollout
    venv = make_vec_env(cfg, "train")
    partial = instantiate(cfg.agent.algo)
    model = partial(env=venv, seed=0, verbose=0, rollout_buffer_class=buffer_class(partial.func))
    assert isinstance(model.rollout_buffer,
                      MaskableCreditRolloutBuffer if algo == "maskable_ppo" else CreditRolloutBuffer)
    rec = Recorder()
    model.learn(LENGTH * 2, callback=CallbackList([CreditCallback(), rec]))
    buf = model.rollout_buffer
    # Independent path: the env's Credit.step names the decision's episode step = the buffer row.
    expected = np.zeros((LENGTH, 2))
    paid = np.zeros((LENGTH, 2))
    delayed = 0
    for t, infos in enumerate(rec.infos):
        for i, info in enumerate(infos):
            paid[t, i] = sum(cr.reward for cr in info["credits"])
            for cr in info["credits"]:
                expected[cr.step, i] += cr.reward
                delayed += cr.step != t
    assert buf.uncredited == 0
    assert delayed > LENGTH  # most requests complete after later arrivals: the credit really moves
    np.testing.assert_allclose(buf.rewards, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buf.rewards.sum(), paid.sum(), rtol=1e-5)  # nothing lost or invented
    assert not np.allclose(expected, paid)  # the paid (completion-time) rewards were different


def test_misaligned_rollouts_are_refused_with_the_keys_named() -> None:
    with pytest.raises(ValueError, match=r"agent.algo.n_steps \(40\) must be a multiple of episode_length \(48\)"):
        check_alignment(cfg_of("agent.algo.n_steps=40"))
    with pytest.raises(ValueError, match="agent.normalize.reward"):
        check_alignment(cfg_of("agent.normalize.reward=true"))
    check_alignment(cfg_of("agent.algo.n_steps=96"))  # two episodes per rollout is fine
