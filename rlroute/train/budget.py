"""A large-model budget as a Lagrangian: constrained PPO through one SB3 callback (``conf/scenario/budgeted.yaml``).

The constraint: over a rollout, the share of decisions that use the large model (``large`` or ``hybrid``)
must stay at or below ``large_share``. Training maximises ``reward - lambda * uses_large`` and updates the
dual variable after every rollout by projected gradient ascent on the dual,
``lambda <- max(0, lambda + dual_lr * (share_large - large_share))`` (Altman, *Constrained MDPs*, 1999; the
Lagrangian PPO of Ray et al., *Benchmarking Safe Exploration*, 2019, updates it the same way). The
penalty is written into the credited rollout buffer's ``shaping`` row for the step, so it is applied
with the per-request credit in ``compute_returns_and_advantage`` (:mod:`rlroute.train.credit`); the
env's reward, validation and evaluation stay the unpenalised scenario reward. No observation feature is
added: the policy learns a stationary rule that spends the budget where it buys the most.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from rlroute.types import Action


class BudgetCallback(BaseCallback):
    """Penalises each large-using decision by ``lambda`` and updates ``lambda`` after each rollout.

    Args:
        large_share: the budget, a share of decisions in (0, 1).
        dual_lr: dual step size (reward units per unit of overspent share), >= 0.
        init: the initial ``lambda`` (>= 0).
    """

    def __init__(self, large_share: float, dual_lr: float = 1.0, init: float = 0.0) -> None:
        super().__init__()
        if not 0.0 < float(large_share) < 1.0:
            raise ValueError(f"budget.large_share must be a share in (0, 1), got {large_share!r}")
        if float(dual_lr) < 0 or float(init) < 0:
            raise ValueError(f"budget.dual_lr and budget.init must be >= 0, got {dual_lr!r}, {init!r}")
        self.large_share = float(large_share)
        self.dual_lr = float(dual_lr)
        self.lam = float(init)
        self.n = 0
        self.n_large = 0

    def _init_callback(self) -> None:
        if not hasattr(getattr(self.model, "rollout_buffer", None), "shaping"):
            raise TypeError("BudgetCallback needs a credited rollout buffer (reward.credit=request)")

    def _on_rollout_start(self) -> None:
        self.n = self.n_large = 0

    def _on_step(self) -> bool:
        buf: Any = self.model.rollout_buffer  # type: ignore[attr-defined]  # on-policy algorithms have one
        actions = np.asarray(self.locals["actions"]).reshape(-1)
        uses = (actions == int(Action.LARGE)) | (actions == int(Action.HYBRID))
        buf.shaping[buf.pos] = -self.lam * uses
        self.n += uses.size
        self.n_large += int(uses.sum())
        return True

    def _on_rollout_end(self) -> None:
        share = self.n_large / max(self.n, 1)
        self.logger.record("budget/large_share", share)
        self.logger.record("budget/lambda", self.lam)  # the lambda this rollout was trained with
        self.lam = max(0.0, self.lam + self.dual_lr * (share - self.large_share))


def budget_callback(cfg: Mapping[str, Any] | None) -> BudgetCallback | None:
    """The callback of a ``budget`` config block (``None`` when the scenario has no budget).

    Raises:
        ValueError: an unknown key in ``budget`` (named), or a bad value.
    """
    if not cfg:
        return None
    cfg = dict(cfg)
    known = {"large_share", "dual_lr", "init"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown budget config key(s) {unknown}; expected some of {sorted(known)}")
    return BudgetCallback(**{k: float(v) for k, v in cfg.items()})


def budget_share(cfg: Mapping[str, Any]) -> float | None:
    """The large-model budget of a root config (``budget.large_share``), ``None`` when it has none."""
    budget = cfg.get("budget") or {}
    return float(budget["large_share"]) if "large_share" in budget else None
