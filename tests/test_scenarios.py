"""Every scenario (conf/scenario/) composes, runs in tiny mode, and pays each request its own reward once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from stable_baselines3.common.callbacks import CallbackList

from rlroute.env import build_env
from rlroute.train.budget import BudgetCallback, budget_callback
from rlroute.train.credit import CreditCallback, buffer_class
from rlroute.train.envs import make_vec_env
from rlroute.types import Action

CONF = Path(__file__).resolve().parents[1] / "conf"
SCENARIOS = sorted(p.stem for p in (CONF / "scenario").glob("*.yaml"))
SHARED_DATA = Path(os.environ.get("RLROUTE_SHARED_DATA", CONF.parents[1] / "shared" / "data"))


def cfg_of(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_there_are_the_four_scenarios() -> None:
    assert {"provisioned_fleet", "token_api", "budgeted", "multiturn_cache"} <= set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_documents_why_and_its_measured_load(name: str) -> None:
    text = (CONF / "scenario" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert "Why routing matters here" in text
    assert "knees" in text.lower() and "KNEES_TABLE" not in text and "LARGE_SHARE" not in text
    assert cfg_of(f"scenario={name}").scenario_name == name


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_runs_and_credits_sum_to_own_rewards(name: str) -> None:
    cfg = cfg_of(f"scenario={name}", "episode_length=48")
    if cfg.get("needs_shared_data") and not SHARED_DATA.is_dir():
        pytest.skip(f"scenario {name} needs ../shared/data ({SHARED_DATA})")
    env = build_env(cfg, split="train")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    rewards, completions, quality = [], [], {}
    trunc = False
    while not trunc:
        _, r, _, trunc, info = env.step(int(rng.integers(0, 3)))
        rewards.append(r)
        completions += info["completions"]
        quality[info["request_id"]] = info["quality"]
    assert len(rewards) == 48 and len(completions) == 48  # drained: every decision completed in the episode
    rc = env.reward_cfg
    own = sum(rc.request_reward(0.0 if c.failed else quality[c.request_id], c.cost, c) for c in completions)
    assert sum(rewards) == pytest.approx(own, rel=1e-9, abs=1e-9)


def test_budget_lagrangian_penalises_large_and_follows_the_overspend() -> None:
    cfg = cfg_of("scenario=budgeted", "episode_length=32", "agent.n_envs=2", "agent.algo.batch_size=64",
                 "agent.algo.n_epochs=1", "agent.algo.gamma=0.0", "budget.dual_lr=3.0")
    venv = make_vec_env(cfg, "train")
    partial = instantiate(cfg.agent.algo)
    model = partial(env=venv, seed=0, verbose=0, rollout_buffer_class=buffer_class(partial.func))
    budget = budget_callback(cfg.budget)
    assert isinstance(budget, BudgetCallback) and budget.lam == 0.0
    model.learn(32 * 2 * 2, callback=CallbackList([CreditCallback(), budget]))  # two rollouts
    buf = model.rollout_buffer
    # PPO's training pass flattened the buffer's actions env-major; the shaping rows are (step, env).
    uses = np.isin(buf.actions.reshape(2, 32).T, [int(Action.LARGE), int(Action.HYBRID)])
    assert uses.mean() > 0.2  # a fresh policy overspends a 20 % budget ...
    lam_2nd = budget.lam - 3.0 * (uses.mean() - 0.2)  # ... so lambda rose; the 2nd rollout was trained with lam_2nd
    assert lam_2nd > 0
    np.testing.assert_allclose(buf.shaping, -lam_2nd * uses, rtol=1e-5)
    with pytest.raises(ValueError, match=r"unknown budget config key\(s\) \['share'\]"):
        budget_callback({"share": 0.2})
    with pytest.raises(ValueError, match="budget.large_share"):
        budget_callback({"large_share": 1.5})
