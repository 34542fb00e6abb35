"""Building a :class:`~rlroute.cluster.sim.cluster.SimCluster` from the ``cluster`` config group (plain or
OmegaConf, with or without ``_target_``), once per call or once per factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlroute.cluster.sim.cluster import SimCluster


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            out = OmegaConf.to_container(cfg, resolve=True)
            assert isinstance(out, dict)
            return {str(k): v for k, v in out.items()}
    except ImportError:  # pragma: no cover - omegaconf ships with hydra, a core dependency
        pass
    return dict(cfg)


def build_cluster(cfg: Mapping[str, Any], rng: np.random.Generator | None = None, **overrides: Any) -> SimCluster:
    """Build a :class:`SimCluster` from the ``cluster`` config group (with or without ``_target_``)."""
    kwargs = {k: v for k, v in _plain(cfg).items() if not k.startswith("_")}
    kwargs.update(overrides)
    return SimCluster(rng=rng, **kwargs)


def cluster_factory(cfg: Mapping[str, Any], **overrides: Any) -> Callable[[np.random.Generator], SimCluster]:
    """A ``rng -> SimCluster`` builder that resolves the config once.

    ``hydra.utils.instantiate`` costs ~15 ms per call (config copies); building from a plain dict costs
    ~0.3 ms, which matters when an env builds a fresh cluster every episode.
    """
    kwargs = {k: v for k, v in _plain(cfg).items() if not k.startswith("_")}
    kwargs.update(overrides)
    build_cluster(kwargs)  # fail on a bad config now, not at the first episode

    def make(rng: np.random.Generator) -> SimCluster:
        return SimCluster(rng=rng, **kwargs)

    return make


__all__ = ["build_cluster", "cluster_factory"]
