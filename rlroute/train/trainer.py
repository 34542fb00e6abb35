"""``train(cfg)``: one PPO / MaskablePPO training run, from a composed Hydra cfg to a run folder.

A run folder holds what every later step reads (``rlroute eval`` over run folders, ``SB3Policy``,
``rlroute export``):

| file | what |
| --- | --- |
| ``model.zip`` | the selected model: best on the validation split (``best/``), else the last |
| ``vecnormalize.pkl`` | the observation statistics that go with ``model.zip`` |
| ``config.yaml`` | the resolved cfg of the run (seed, workload, reward, agent, ...) |
| ``metrics.json`` | objective (mean validation reward per decision), validation history, timings |
| ``best/``, ``last/``, ``checkpoints/`` | best-on-validation, final and periodic snapshots |
| ``progress.csv`` / TensorBoard events / ``wandb/`` | training curves, per ``conf/logger`` |
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback

from rlroute.seeding import seed_everything
from rlroute.train.budget import budget_callback
from rlroute.train.callbacks import RouteMetricsCallback, ValidationCallback
from rlroute.train.credit import CreditCallback, buffer_class, check_alignment, credit_scheme
from rlroute.train.envs import (
    EnvBuilder,
    default_builder,
    make_vec_env,
    plain_cfg,
    training_env_cfg,
    wrap_normalize,
)
from rlroute.train.tracking import Tracker
from rlroute.train.validation import Validator
from rlroute.train.warmstart import FreezeActor, WarmStart, warm_start

OBJECTIVE = "eval/reward"


@dataclass
class TrainResult:
    """What a training run produced; ``tracker`` is still open when ``finish=False`` was asked for."""

    run_dir: Path
    objective: float
    metrics: dict[str, Any]
    tracker: Tracker | None
    model: Any = None  # the final (last) model, in memory


def run_name(cfg: DictConfig) -> str:
    """``<experiment>-<agent>-seed<seed>``: the run's name in W&B and reports."""
    return f"{cfg.get('experiment_name') or 'default'}-{cfg.agent.name}-seed{cfg.seed}"


def _select(run_dir: Path, best_exists: bool) -> str:
    """Copy the chosen snapshot's model and statistics to the run folder's top level."""
    source = run_dir / ("best" if best_exists else "last")
    for name in ("model.zip", "vecnormalize.pkl"):
        if (source / name).is_file():
            shutil.copy2(source / name, run_dir / name)
    return source.name


def train_run(
    cfg: DictConfig,
    run_dir: str | Path | None = None,
    *,
    builder: EnvBuilder = default_builder,
    finish: bool = True,
    on_validation: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the agent of ``cfg`` on the ``train`` split, validate on ``val``, write the run folder.

    Args:
        cfg: composed root config (workload, quality, cluster, reward, agent, logger, seed, ...).
        run_dir: output folder; defaults to ``cfg.out_dir`` (Hydra's run directory).
        builder: ``(cfg, split) -> env``; the real routing env unless a benchmark swaps it.
        finish: close the tracker (W&B run) before returning.
        on_validation: called with every validation's metrics (Ray Tune's report in ``rlroute tune``).
    """
    cfg = cfg.copy()
    per_request = credit_scheme(cfg) == "request"
    if per_request:
        check_alignment(cfg)  # before anything is built or written
    budget = budget_callback(cfg.get("budget"))
    if budget is not None and not per_request:
        raise ValueError("a budget (cfg.budget) needs reward.credit=request: its penalty rides on the credited buffer")
    run_dir = Path(run_dir if run_dir is not None else cfg.out_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.out_dir = str(run_dir)  # resolved once: subprocess envs and saved configs need no Hydra context
    seed_everything(int(cfg.seed))
    import torch

    torch.set_num_threads(int(cfg.agent.get("torch_threads", 1)))
    OmegaConf.save(OmegaConf.create(plain_cfg(cfg)), run_dir / "config.yaml")

    agent = cfg.agent
    venv = wrap_normalize(make_vec_env(training_env_cfg(cfg), "train", builder=builder), cfg)
    tracker = Tracker(cfg.logger, run_dir, cfg, run_name(cfg))
    algo = instantiate(agent.algo)
    extra = {"rollout_buffer_class": buffer_class(algo.func)} if per_request else {}
    model = algo(env=venv, seed=int(cfg.seed), verbose=0, **extra)
    model.set_logger(tracker.logger)
    ws = WarmStart.from_cfg(agent.get("warm_start"))
    warm: dict[str, float] = {}
    if ws.enabled:
        t_ws = time.perf_counter()
        warm = {**warm_start(model, cfg, ws), "warm_start/seconds": time.perf_counter() - t_ws}
        for key, value in warm.items():
            model.logger.record(key, value)
        if budget is not None and "warm_start/budget_threshold" in warm:
            budget.lam = max(0.0, warm["warm_start/budget_threshold"])  # the teacher's price of the budget

    n_envs = int(agent.n_envs)
    seeds = [int(s) for s in agent.eval.seeds]
    validator = Validator(cfg, "val", seeds, builder)
    val_cb = ValidationCallback(validator, run_dir, int(agent.eval.freq), bool(agent.eval.deterministic),
                                at_start=ws.enabled, max_strong_share=budget.large_share if budget else None,
                                on_result=on_validation)
    callbacks: list[Any] = [RouteMetricsCallback(), val_cb, *([CreditCallback()] if per_request else []),
                            *([budget] if budget is not None else []),
                            *([FreezeActor(ws.value_warmup)] if ws.enabled else [])]
    if int(agent.checkpoint_freq) > 0:
        callbacks.append(CheckpointCallback(
            save_freq=max(int(agent.checkpoint_freq) // n_envs, 1), save_path=str(run_dir / "checkpoints"),
            name_prefix="model", save_vecnormalize=True))

    t0 = time.perf_counter()
    model.learn(int(agent.total_timesteps), callback=CallbackList(callbacks),
                progress_bar=bool(agent.progress_bar), log_interval=1)
    seconds = time.perf_counter() - t0

    (run_dir / "last").mkdir(exist_ok=True)
    model.save(run_dir / "last" / "model.zip")
    venv.save(str(run_dir / "last" / "vecnormalize.pkl"))
    venv.close()
    selected = _select(run_dir, (run_dir / "best" / "model.zip").is_file())
    best = next((h for h in val_cb.history if h.get(OBJECTIVE) == val_cb.best_reward), {})
    objective = float(val_cb.best_reward)
    metrics: dict[str, Any] = {
        "objective": objective,
        "objective_key": OBJECTIVE,
        "run_name": run_name(cfg),
        "experiment": cfg.get("experiment_name"),
        "agent": str(agent.name),
        "algo": str(agent.algo._target_),
        "seed": int(cfg.seed),
        "total_timesteps": int(model.num_timesteps),
        "train_seconds": seconds,
        "steps_per_second": model.num_timesteps / max(seconds, 1e-9),
        "selected": selected,
        "best_step": val_cb.best_step,
        "val": best,
        "eval_history": val_cb.history,
        "warm_start": warm,
        **_schema_info(),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    tracker.log_summary({"objective": objective, "train_seconds": seconds, **best})
    tracker.log_table("eval/history", val_cb.history)
    if finish:
        tracker.finish()
    return TrainResult(run_dir, objective, metrics, None if finish else tracker, model)


def _schema_info() -> dict[str, Any]:
    """The feature schema's version and hash, so a run folder says which observation it was trained on."""
    try:
        from rlroute.features import SCHEMA
    except ImportError:  # features not importable: the run still records everything else
        return {}
    return {"feature_schema_version": str(getattr(SCHEMA, "version", "")),
            "feature_schema_hash": str(getattr(SCHEMA, "hash", ""))}


def train(cfg: DictConfig, run_dir: str | Path | None = None, *, builder: EnvBuilder = default_builder) -> float:
    """Train and return the sweep objective: the best mean validation reward per decision."""
    return train_run(cfg, run_dir, builder=builder).objective
