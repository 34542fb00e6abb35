"""The behaviour-cloning warm start of PPO (rlroute/train/warmstart.py) on the real routing env."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from rlroute.env.build import default_config
from rlroute.policies.registry import make_policy
from rlroute.policies.sb3 import SB3Policy
from rlroute.train.envs import make_vec_env, wrap_normalize
from rlroute.train.trainer import train_run
from rlroute.train.warmstart import FreezeActor, Teacher, WarmStart, actor_parameters, collect_states
from rlroute.types import Action

SMALL_TEACHER = {"iterations": 1, "episode_length": 48, "epochs": 100}


def tiny_cfg(*overrides: str) -> object:
    cfg = default_config(["experiment=tiny", "logger=none", *overrides])
    with open_dict(cfg):
        cfg.agent.warm_start.teacher = "supervised"
        cfg.agent.warm_start.teacher_train = dict(SMALL_TEACHER)
    return cfg


def test_bad_warm_start_config_fails_with_the_key_named() -> None:
    with pytest.raises(ValueError, match="unknown agent.warm_start key.*'teachr'"):
        WarmStart.from_cfg({"teachr": "supervised"})
    with pytest.raises(ValueError, match="teacher must be null or 'supervised'"):
        WarmStart.from_cfg({"teacher": "oracle"})
    with pytest.raises(ValueError, match="smoothing"):
        WarmStart.from_cfg({"teacher": "supervised", "smoothing": 1.0})
    assert not WarmStart.from_cfg(None).enabled and WarmStart.from_cfg({"teacher": "supervised"}).enabled


def test_warm_started_run_starts_from_the_teachers_policy(tmp_path: Path) -> None:
    cfg = tiny_cfg("agent.total_timesteps=128", "agent.eval.freq=0")
    with open_dict(cfg):
        cfg.agent.warm_start.epochs = 60
    result = train_run(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    warm = metrics["warm_start"]
    assert warm["warm_start/states"] == 5 * int(cfg.episode_length)  # five behaviour rules, one episode each
    assert warm["warm_start/agreement"] >= 0.9, warm  # the actor reproduces the teacher's labels
    # The warm policy is validated before any PPO update, so it is a candidate snapshot.
    assert metrics["eval_history"][0]["time/total_timesteps"] == 0.0
    assert len(metrics["eval_history"]) == 2 and result.run_dir == tmp_path / "run"
    assert SB3Policy(tmp_path / "run").model is not None


def test_freeze_actor_trains_only_the_critic_during_the_warmup(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    venv = wrap_normalize(make_vec_env(cfg, "train"), cfg)
    model = instantiate(cfg.agent.algo)(env=venv, seed=0, verbose=0)
    rollout = int(cfg.agent.n_envs) * int(cfg.agent.algo.n_steps)

    def snapshot() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        actor = [p.detach().clone() for p in actor_parameters(model.policy)]
        critic = [p.detach().clone() for p in model.policy.value_net.parameters()]
        return actor, critic

    a0, c0 = snapshot()
    model.learn(rollout, callback=FreezeActor(1))  # one rollout, one update: the warm-up
    a1, c1 = snapshot()
    assert all(torch.equal(x, y) for x, y in zip(a0, a1, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(c0, c1, strict=True))
    model.learn(2 * rollout, callback=FreezeActor(1), reset_num_timesteps=False)  # second update moves the actor
    a2, _ = snapshot()
    assert not all(torch.equal(x, y) for x, y in zip(a1, a2, strict=True))
    assert all(p.requires_grad for p in actor_parameters(model.policy))
    venv.close()


def test_budgeted_labels_spend_the_budget_on_the_teachers_best_requests() -> None:
    cfg = default_config(["scenario=budgeted", "episode_length=96", "workload.rate=40"])
    teacher_policy = make_policy("supervised", train={**SMALL_TEACHER, "behaviour": ["all_small", "all_large"]})
    teacher_policy.prepare(cfg)
    teacher = Teacher(teacher_policy)
    ws = WarmStart(teacher="supervised", behaviour=["teacher", "all_small"])
    obs, labels = collect_states(cfg, teacher, ws, budget_share=0.2)
    assert obs.shape == (192, 224) and labels.shape == (192,)
    assert teacher.threshold is not None
    share = float(np.isin(labels, [int(Action.LARGE), int(Action.HYBRID)]).mean())
    assert 0.15 <= share <= 0.25, share  # the quantile over every collected state: ~20 % of the labels


def test_validation_snapshot_choice_puts_feasible_snapshots_first(tmp_path: Path) -> None:
    from rlroute.train.callbacks import ValidationCallback

    cb = ValidationCallback(lambda _: {}, tmp_path, freq=0, max_strong_share=0.2)
    within_low, within_high = cb._key(0.70, 0.19), cb._key(0.72, 0.20)
    over_small, over_large = cb._key(0.90, 0.21), cb._key(0.95, 0.40)
    assert within_high > within_low > over_small > over_large  # any feasible beats any infeasible
    unbudgeted = ValidationCallback(lambda _: {}, tmp_path, freq=0)
    assert unbudgeted._key(0.95, 0.40) > unbudgeted._key(0.90, 0.10)  # no budget: reward alone
