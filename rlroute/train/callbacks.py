"""SB3 callbacks of a training run: routing metrics, periodic validation with best-model selection.

Metric keys are namespaced like SB3's own (``rollout/``, ``train/``): ``route/`` holds what the policy
decided and what it bought (action mix, quality, cost per request), ``cluster/`` what the simulated cluster
did (prefix-cache hit rate, TTFT percentiles, failures), ``eval/`` the validation results. They reach every
configured writer (stdout, CSV, TensorBoard, W&B) through the SB3 logger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from rlroute.types import ACTION_NAMES, Completion


class RouteStats:
    """Accumulates decisions, rewards and completions; summarises them as ``route/`` and ``cluster/``."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget everything accumulated."""
        self.actions = np.zeros(len(ACTION_NAMES), dtype=np.int64)
        self.rewards: list[float] = []
        self.ok: list[bool] = []
        self.cost = 0.0
        self.n_completions = 0
        self.n_failed = 0
        self.ttft: list[float] = []
        self.prompt_tokens = 0
        self.cached_tokens = 0

    def add_actions(self, actions: Any) -> None:
        """Count the actions of one (vectorised) step."""
        a = np.asarray(actions, dtype=np.int64).reshape(-1)
        self.actions += np.bincount(a, minlength=len(ACTION_NAMES))[: len(ACTION_NAMES)]

    def add_rewards(self, rewards: Any) -> None:
        """Record the rewards of one (vectorised) step."""
        self.rewards.extend(float(r) for r in np.asarray(rewards, dtype=np.float64).reshape(-1))

    def add_completions(self, completions: list[Completion]) -> None:
        """Record finished requests (from ``info["completions"]`` or ``env.drain()``)."""
        for c in completions:
            self.n_completions += 1
            self.cost += float(c.cost)
            if c.failed:
                self.n_failed += 1
                continue
            if c.quality_ok is not None:
                self.ok.append(bool(c.quality_ok))
            self.ttft.append(float(c.ttft))
            self.prompt_tokens += int(c.prompt_tokens)
            self.cached_tokens += int(c.cached_tokens)

    def summary(self) -> dict[str, float]:
        """Namespaced means and rates; metrics with no data are left out rather than reported as 0."""
        out: dict[str, float] = {}
        n = int(self.actions.sum())
        if n:
            for i, name in enumerate(ACTION_NAMES):
                out[f"route/frac_{name}"] = float(self.actions[i] / n)
        if self.rewards:
            out["route/reward"] = float(np.mean(self.rewards))
        if self.ok:
            out["route/quality"] = float(np.mean(self.ok))
        if self.n_completions:
            out["route/cost_per_request"] = self.cost / self.n_completions
            out["cluster/fail_rate"] = self.n_failed / self.n_completions
        if self.prompt_tokens:
            out["cluster/hit_rate"] = self.cached_tokens / self.prompt_tokens
        if self.ttft:
            out["cluster/ttft_p50"] = float(np.percentile(self.ttft, 50))
            out["cluster/ttft_p99"] = float(np.percentile(self.ttft, 99))
        return out


class RouteMetricsCallback(BaseCallback):
    """Logs the action mix, quality, cost and cluster metrics of each rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.stats = RouteStats()

    def _on_step(self) -> bool:
        self.stats.add_actions(self.locals["actions"])
        self.stats.add_rewards(self.locals["rewards"])
        for info in self.locals["infos"]:
            self.stats.add_completions(info.get("completions", ()))
        return True

    def _on_rollout_end(self) -> None:
        for key, value in self.stats.summary().items():
            self.logger.record(key, value)
        self.stats.clear()


Validator = Callable[[Any], dict[str, float]]


class ValidationCallback(BaseCallback):
    """Evaluates the current policy on the validation split every ``freq`` env steps and at the end.

    The validation function receives an :class:`~rlroute.policies.sb3.SB3Policy` wrapping the live model
    and a frozen copy of the observation statistics, and returns namespaced metrics including
    ``eval/reward`` (mean reward per decision), the metric a sweep optimises. Whenever it improves, the
    model and statistics are saved to ``<run>/best/``.

    Args:
        validate: policy -> metrics.
        run_dir: the run folder.
        freq: env steps between evaluations (0: only at the end).
        deterministic: evaluate the greedy policy.
        at_start: also evaluate before the first update (a warm-started policy is a candidate snapshot).
        on_result: called with each validation's metrics (and ``eval/best_reward``), e.g. to report them to
            a sweep's scheduler (``rlroute tune``).
        max_strong_share: a large-model budget (``budget.large_share``): a snapshot whose validation share of
            large/hybrid decisions (``eval/strong_share``) exceeds it is infeasible -- any feasible snapshot
            beats it, and among infeasible ones the lower share wins (the study scores over-budget policies
            as infeasible, ``rlroute/study/results.py:within_budget``).
    """

    def __init__(self, validate: Validator, run_dir: Path, freq: int, deterministic: bool = True,
                 at_start: bool = False, max_strong_share: float | None = None,
                 on_result: Callable[[dict[str, float]], None] | None = None) -> None:
        super().__init__()
        self.on_result = on_result
        self.at_start = at_start
        self.max_strong_share = max_strong_share
        self._best_key: tuple[bool, float] = (False, -np.inf)
        self.validate = validate
        self.best_dir = Path(run_dir) / "best"
        self.freq = int(freq)
        self.deterministic = deterministic
        self.best_reward = -np.inf
        self.best_step = -1
        self.history: list[dict[str, float]] = []
        self._last = 0

    def _stats(self) -> VecNormalize | None:
        import copy

        venv = self.model.get_vec_normalize_env()
        if venv is None:
            return None
        frozen = copy.copy(venv)  # shallow: share nothing mutable that evaluation could update
        frozen.obs_rms = copy.deepcopy(venv.obs_rms)
        frozen.training = False
        return frozen

    def evaluate_now(self) -> dict[str, float]:
        """Run the validation, log it, keep the best model."""
        from rlroute.policies.sb3 import SB3Policy

        t0 = time.perf_counter()
        policy = SB3Policy.from_model(self.model, self._stats(), deterministic=self.deterministic)
        metrics = dict(self.validate(policy))
        metrics["eval/seconds"] = time.perf_counter() - t0
        metrics["time/total_timesteps"] = float(self.num_timesteps)
        self.history.append(metrics)
        for key, value in metrics.items():
            if key.startswith("eval/"):
                self.logger.record(key, value)
        reward = metrics.get("eval/reward", -np.inf)
        rank = self._key(reward, metrics.get("eval/strong_share", 0.0))
        if rank > self._best_key:
            self._best_key = rank
            self.best_reward, self.best_step = reward, self.num_timesteps
            self.best_dir.mkdir(parents=True, exist_ok=True)
            self.model.save(self.best_dir / "model.zip")
            venv = self.model.get_vec_normalize_env()
            if venv is not None:
                venv.save(str(self.best_dir / "vecnormalize.pkl"))
            (self.best_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        self.logger.record("eval/best_reward", self.best_reward)
        if self.on_result is not None:
            self.on_result({**metrics, "eval/best_reward": float(self.best_reward)})
        return metrics

    def _key(self, reward: float, share: float) -> tuple[bool, float]:
        if self.max_strong_share is None:
            return True, reward
        feasible = share <= self.max_strong_share + 1e-9
        return feasible, (reward if feasible else -share)

    def _on_training_start(self) -> None:
        if self.at_start:
            self.evaluate_now()

    def _on_step(self) -> bool:
        if self.freq > 0 and self.num_timesteps - self._last >= self.freq:
            self._last = self.num_timesteps
            self.evaluate_now()
        return True

    def _on_training_end(self) -> None:
        if self._last != self.num_timesteps:
            self._last = self.num_timesteps
            self.evaluate_now()
            self.logger.dump(self.num_timesteps)
