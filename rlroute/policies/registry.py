"""Policy registry: name → class, and :func:`make_policy` from a name, a Hydra config or an instance.

Entries are ``"module:Class"`` strings resolved on first use, so listing policies imports nothing heavy
and the learned policies (``sb3`` by the training package, ``onnx`` by the export package) plug in
without this module importing torch or onnxruntime. Every name also has ``conf/policy/<name>.yaml`` with a
``_target_``; :func:`make_policy` prefers that file (so a config's defaults are the defaults everywhere)
and falls back to the class with keyword arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from rlroute.paths import CONF_DIR
from rlroute.policies.base import Policy

POLICY_CONF_DIR = CONF_DIR / "policy"

POLICIES: dict[str, str] = {
    "random": "rlroute.policies.simple:RandomPolicy",
    "round_robin": "rlroute.policies.simple:RoundRobinPolicy",
    "all_large": "rlroute.policies.simple:AllLarge",
    "all_small": "rlroute.policies.simple:AllSmall",
    "all_hybrid": "rlroute.policies.simple:AllHybrid",
    "length_cut": "rlroute.policies.simple:LengthCut",
    "heuristic": "rlroute.policies.heuristic:SeedHeuristic",
    "cache_aware": "rlroute.policies.heuristic:CacheAwarePolicy",
    "threshold": "rlroute.policies.threshold:ThresholdRouter",
    "quality_oracle": "rlroute.policies.oracle:HindsightOracle",
    "reward_oracle": "rlroute.policies.forked:RewardOracle",
    "lookahead": "rlroute.policies.forked:LookAhead",
    "linucb": "rlroute.policies.bandit:LinUCB",
    "supervised": "rlroute.policies.supervised:SupervisedRouter",
    "sb3": "rlroute.policies.sb3:SB3Policy",
    "onnx": "rlroute.policies.onnx:OnnxPolicy",
    "logged": "rlroute.policies.logged:LoggedPolicy",
}

# The hand-written baselines, in the order tables list them.
BASELINES: tuple[str, ...] = (
    "all_small", "all_large", "all_hybrid", "random", "round_robin", "heuristic", "cache_aware", "length_cut",
    "threshold", "quality_oracle",
)
# References that fork the simulator at every decision (not deployable, ~10-100x slower than a baseline).
FORK_REFERENCES: tuple[str, ...] = ("reward_oracle", "lookahead")


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a policy under ``name`` (for policies defined outside this package)."""

    def deco(cls: type) -> type:
        POLICIES[name] = f"{cls.__module__}:{cls.__qualname__}"
        return cls

    return deco


def policy_class(name: str) -> type:
    """The class registered under ``name``; a clear error lists the known names."""
    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    module, _, attr = POLICIES[name].partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def policy_config(name: str) -> dict[str, Any] | None:
    """``conf/policy/<name>.yaml`` as a plain dict, or ``None`` when there is no such file."""
    path = POLICY_CONF_DIR / f"{name}.yaml"
    if not path.exists():
        return None
    from omegaconf import OmegaConf

    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(loaded, dict) or "_target_" not in loaded:
        raise ValueError(f"{path}: expected a mapping with a `_target_` key")
    return {str(k): v for k, v in loaded.items()}


def make_policy(spec: str | Mapping[str, Any] | Policy, **overrides: Any) -> Policy:
    """Build a policy.

    Args:
        spec: a registry name (``"heuristic"``), a config mapping / DictConfig with ``_target_`` (as
            Hydra composes ``cfg.policy``), or an existing policy (returned unchanged).
        overrides: keyword arguments merged over the config (e.g. ``threshold=0.4``, ``path=...``).
    """
    if isinstance(spec, str):
        cfg = policy_config(spec)
        if cfg is None:
            return policy_class(spec)(**overrides)  # type: ignore[no-any-return]
        spec = cfg
    if isinstance(spec, Mapping) or hasattr(spec, "_target_") or _is_dictconfig(spec):
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg_any: Any = spec
        container = OmegaConf.to_container(cfg_any, resolve=True) if _is_dictconfig(cfg_any) else dict(cfg_any)
        assert isinstance(container, dict)
        if "_target_" not in container:
            raise ValueError(f"policy config: expected a `_target_` key, got keys {sorted(container)}")
        container.update(overrides)
        policy = instantiate(container, _convert_="all")
    else:
        policy = spec
    if not isinstance(policy, Policy):
        raise TypeError(f"{type(policy).__name__} is not a Policy: subclass rlroute.policies.base.Policy "
                        "(act(ctx) required; reset, prepare, score, bind_env, observe have defaults)")
    return policy


def _is_dictconfig(obj: object) -> bool:
    return type(obj).__name__ == "DictConfig"


def policy_name(policy: Policy) -> str:
    """The policy's ``name``."""
    return str(policy.name)
