"""A trained SB3 policy behind the :class:`~rlroute.policies.base.Policy` interface.

``SB3Policy(path)`` loads a run folder written by ``rlroute train`` — ``model.zip`` (PPO or MaskablePPO),
``vecnormalize.pkl`` (the observation statistics the policy was trained with) and ``config.yaml`` (which
algorithm) — and acts on ``DecisionContext.obs``, normalised exactly as during training. Masks in
``ctx.mask`` are honoured by MaskablePPO; a plain PPO policy whose chosen action is masked out falls back to
the most probable allowed action.

``zero_blocks`` supports the feature-block ablation: the named blocks (request, system, cache) are set to
0 *after* normalisation, i.e. replaced by their training mean, which removes their information without
feeding the network values it never saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import strong_score
from rlroute.types import Action


def feature_blocks() -> dict[str, slice]:
    """Block name -> slice of the observation, from the feature schema (request | system | cache)."""
    from rlroute.features import SCHEMA

    return dict(SCHEMA.slices)


MODEL_FILE = "model.zip"
STATS_FILE = "vecnormalize.pkl"
CONFIG_FILE = "config.yaml"


def _algo_class(run_dir: Path) -> Any:
    """The SB3 algorithm class recorded in the run's config (``agent.algo._target_``), PPO if absent.

    Raises:
        ValueError: the config names a class that cannot be imported.
    """
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    target = "stable_baselines3.PPO"
    # A snapshot folder (best/, last/) sits inside the run folder that holds the config.
    for cfg_path in (run_dir / CONFIG_FILE, run_dir.parent / CONFIG_FILE):
        if cfg_path.is_file():
            cfg = OmegaConf.load(cfg_path)
            target = str(OmegaConf.select(cfg, "agent.algo._target_", default=target))
            break
    return get_class(target)


class SB3Policy(Policy):
    """Acts with a trained SB3 model on the 224-dim observation.

    Args:
        path: a run folder (holding ``model.zip`` and ``vecnormalize.pkl``) or a ``model.zip`` file whose
            folder holds the statistics.
        deterministic: take the most probable action (evaluation) instead of sampling.
        zero_blocks: feature blocks to blank out after normalisation (ablation); any of request, system,
            cache.
        name: the policy's name in reports (default ``ppo``).

    Raises:
        FileNotFoundError: the model file is missing.
        ValueError: an unknown block name in ``zero_blocks``.
    """

    def __init__(
        self,
        path: str | Path,
        deterministic: bool = True,
        zero_blocks: list[str] | tuple[str, ...] = (),
        name: str | None = None,
    ) -> None:
        p = Path(path)
        run_dir, model_path = (p.parent, p) if p.suffix == ".zip" else (p, p / MODEL_FILE)
        if not model_path.is_file():
            raise FileNotFoundError(f"SB3Policy: no model at {model_path} (expected a run folder of rlroute train)")
        model = _algo_class(run_dir).load(str(model_path), device="cpu")
        stats = None
        if (run_dir / STATS_FILE).is_file():
            from rlroute.train.envs import load_normalize

            stats = load_normalize(run_dir / STATS_FILE)
        self._init(model, stats, deterministic, zero_blocks, name or "ppo")
        self.path: Path | None = run_dir

    @classmethod
    def from_model(
        cls,
        model: Any,
        stats: Any | None,
        deterministic: bool = True,
        zero_blocks: list[str] | tuple[str, ...] = (),
        name: str = "ppo",
    ) -> SB3Policy:
        """Wrap an in-memory model (used by the validation callback during training)."""
        self = cls.__new__(cls)
        self._init(model, stats, deterministic, zero_blocks, name)
        self.path = None
        return self

    def _init(self, model: Any, stats: Any | None, deterministic: bool, zero_blocks: Any, name: str) -> None:
        blocks = feature_blocks() if zero_blocks else {}
        unknown = sorted(set(zero_blocks) - set(blocks))
        if unknown:
            raise ValueError(f"SB3Policy.zero_blocks: unknown block(s) {unknown}; choose from {list(blocks)}")
        self._blank = [blocks[b] for b in zero_blocks]
        self.model = model
        self.stats = stats
        self.deterministic = bool(deterministic)
        self.zero_blocks = tuple(zero_blocks)
        self.name = name
        self._maskable = type(model).__name__.startswith("Maskable")

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """The observation as the network sees it: normalised, clipped, ablated blocks blanked."""
        x = np.asarray(obs, dtype=np.float32).reshape(1, -1)
        if self.stats is not None:
            x = np.asarray(self.stats.normalize_obs(x), dtype=np.float32)
        for block in self._blank:
            x[:, block] = 0.0
        return x

    def action_probs(self, obs: np.ndarray) -> np.ndarray:
        """The policy's action distribution for one raw observation (float[3])."""
        import torch

        x = self.normalize(obs)
        with torch.no_grad():
            tensor, _ = self.model.policy.obs_to_tensor(x)
            dist = self.model.policy.get_distribution(tensor)
            return dist.distribution.probs.cpu().numpy()[0]

    def score(self, ctx: DecisionContext) -> float:
        """P(large) + P(hybrid) over the allowed actions: the score RouteLLM's APGR sweep thresholds."""
        return strong_score(self.action_probs(ctx.obs), ctx.mask)

    def act(self, ctx: DecisionContext) -> Action:
        """Choose an action for the pending request from ``ctx.obs`` (and ``ctx.mask``)."""
        x = self.normalize(ctx.obs)
        mask = None if ctx.mask is None else np.asarray(ctx.mask, dtype=bool).reshape(1, -1)
        if self._maskable:
            action, _ = self.model.predict(x, deterministic=self.deterministic, action_masks=mask)
            return Action(int(np.asarray(action).reshape(-1)[0]))
        action, _ = self.model.predict(x, deterministic=self.deterministic)
        a = int(np.asarray(action).reshape(-1)[0])
        if mask is not None and not mask[0, a] and mask.any():
            probs = self.action_probs(ctx.obs)
            a = int(np.argmax(np.where(mask[0], probs, -1.0)))
        return Action(a)

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless between episodes (the MLP policy has no memory)."""
        del rng
