"""Request cost models: token list prices per pool, or GPU-seconds at an hourly GPU price.

Both answer ``request_cost(pool, prompt_tokens, cached_tokens, output_tokens)`` so the environment can
price a decision when it is made; the simulator bills completions with the same function (per stage).

Token prices (USD per 1M tokens) are chosen by the config group ``conf/cluster/cost/``:

* ``tokens`` (default, also :data:`DEFAULT_PRICES`): an ASSUMPTION, recalled and not re-verified from
  this offline machine: Alibaba Cloud Model Studio's international 2025 list prices, non-thinking mode,
  qwen3-235b-a22b $0.70 in / $2.80 out, qwen3-4b $0.11 in / $0.42 out. The reward's ``cost_weight`` is
  calibrated to these.
* ``tokens_models_dev``: the verifiable listing found offline, models.dev
  (github.com/anomalyco/models.dev ``providers/alibaba-cn/models/qwen3-235b-a22b.toml`` @735cde7,
  ``providers/alibaba/models/qwen3-8b.toml`` @438ce6e): qwen3-235b-a22b $0.287 / $1.147, qwen3-8b
  $0.072 / $0.287 (no Qwen3-4B listing; the 8B price is used as an upper bound).

In both the cached-input price is 20 % of the input price, Model Studio's implicit context-cache rule (its
pricing JSON for qwen-flash lists ``input_cache_hit`` = 0.2 x ``input``; models.dev lists the same ratio
for Alibaba's glm-5.2 ``cache_read``).

The GPU-seconds model prices the marginal engine time a request adds to a batch, from the serving profile:
``b*(prompt - cached) + output*(c + d*(prompt + output/2) + a/ref_batch)`` seconds on ``num_gpus`` GPUs at
``usd_per_gpu_hour`` (default $2.50/GPU-hour, an assumed H100 cloud rental rate); the fixed per-step
overhead ``a`` is shared by ``ref_batch`` sequences (default 16, an assumed typical decode batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlroute.cluster.profiles import ServingProfile

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "large": {"input": 0.70, "cached_input": 0.14, "output": 2.80},
    "small": {"input": 0.11, "cached_input": 0.022, "output": 0.42},
}


@dataclass(slots=True)
class TokenPriceCost:
    """Cost in USD from per-pool token prices (USD per 1M tokens)."""

    prices: dict[str, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PRICES.items()})
    mode: str = "tokens"

    def __post_init__(self) -> None:
        for pool, p in self.prices.items():
            for key in ("input", "cached_input", "output"):
                if key not in p or float(p[key]) < 0:
                    raise ValueError(f"cost.prices.{pool}.{key} must be a price >= 0 (USD per 1M tokens), got {p}")

    def request_cost(self, pool: str, prompt_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """USD for one request stage on ``pool``."""
        p = self.prices[pool]
        return ((prompt_tokens - cached_tokens) * p["input"] + cached_tokens * p["cached_input"]
                + output_tokens * p["output"]) * 1e-6


@dataclass(slots=True)
class GpuSecondsCost:
    """Cost in USD from the marginal GPU time a request adds (see module docstring)."""

    profiles: dict[str, ServingProfile]
    usd_per_gpu_hour: float = 2.50
    ref_batch: int = 16
    mode: str = "gpu_seconds"

    def gpu_seconds(self, pool: str, prompt_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """Estimated GPU-seconds (engine seconds x GPUs) of one request stage."""
        p = self.profiles[pool]
        engine = p.b * (prompt_tokens - cached_tokens) + output_tokens * (
            p.c + p.d * (prompt_tokens + 0.5 * output_tokens) + p.a / self.ref_batch)
        return engine * p.num_gpus

    def request_cost(self, pool: str, prompt_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """USD for one request stage on ``pool``."""
        return self.gpu_seconds(pool, prompt_tokens, cached_tokens, output_tokens) * self.usd_per_gpu_hour / 3600.0



def build_cost_model(
    cfg: Mapping[str, Any] | None, profiles: dict[str, ServingProfile]
) -> TokenPriceCost | GpuSecondsCost:
    """Build the cost model selected by ``cfg['mode']`` (``tokens`` or ``gpu_seconds``)."""
    cfg = dict(cfg or {})
    mode = cfg.pop("mode", "tokens")
    if mode == "tokens":
        prices = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
        for pool, p in dict(cfg.get("prices") or {}).items():
            prices[pool] = {**prices.get(pool, {}), **{k: float(v) for k, v in dict(p).items()}}
        missing = set(profiles) - set(prices)
        if missing:
            raise ValueError(f"cost.prices has no entry for pool(s) {sorted(missing)}")
        return TokenPriceCost(prices=prices)
    if mode == "gpu_seconds":
        return GpuSecondsCost(profiles=profiles, usd_per_gpu_hour=float(cfg.get("usd_per_gpu_hour", 2.50)),
                              ref_batch=int(cfg.get("ref_batch", 16)))
    raise ValueError(f"cost.mode must be 'tokens' or 'gpu_seconds', got {mode!r}")
