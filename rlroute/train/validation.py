"""Validation during training: the evaluation harness (``rlroute.eval.run.evaluate``) on the ``val`` split.

The all-large reference cost (for ``cost_saving``) depends only on the validation seeds, so it is computed
once per run rather than at every evaluation. Metrics come back as the harness names them, under
``eval/``: ``eval/reward`` (mean reward per decision, the sweep objective), ``eval/quality``,
``eval/cost_saving``, ``eval/apgr``, ``eval/ttft_p99``, ``eval/cache_hit_rate``, ``eval/mix_*``, ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from rlroute.train.envs import EnvBuilder, default_builder

# Harness metrics worth a curve during training (the full set is in the final evaluation).
LOGGED = ("reward", "return", "quality", "cost", "cost_saving", "apgr", "strong_share", "mix_large",
          "mix_small", "mix_hybrid", "cache_hit_rate", "ttft_p50", "ttft_p99", "e2e_p99", "slo_attainment",
          "failed_rate")


class Validator:
    """Callable ``policy -> {"eval/<metric>": mean over seeds}`` on one split of ``cfg``.

    Args:
        cfg: the run's composed config.
        split: workload split (``val`` during training).
        seeds: one episode per seed.
        builder: env builder shared with training (the harness' ``env_factory``).
    """

    def __init__(
        self,
        cfg: DictConfig,
        split: str = "val",
        seeds: Sequence[int] = (1000,),
        builder: EnvBuilder = default_builder,
    ) -> None:
        if not seeds:
            raise ValueError("validation needs at least one seed (agent.eval.seeds)")
        self.cfg, self.split, self.seeds, self.builder = cfg, split, [int(s) for s in seeds], builder
        self._reference: dict[int, float] | None = None

    def reference_cost(self) -> dict[int, float]:
        """All-large total cost per validation seed (computed on first use)."""
        if self._reference is None:
            from rlroute.eval.run import all_large_costs

            self._reference = all_large_costs(self.cfg, self.split, self.seeds, self.builder)
        return self._reference

    def __call__(self, policy: Any) -> dict[str, float]:
        from rlroute.eval.run import evaluate

        result = evaluate(policy, self.cfg, self.split, self.seeds, reference_cost=self.reference_cost(),
                          env_factory=self.builder)
        out: dict[str, float] = {}
        for key in LOGGED:
            interval = result.summary.get(key)
            if interval is not None and math.isfinite(interval.mean):
                out[f"eval/{key}"] = float(interval.mean)
        return out
