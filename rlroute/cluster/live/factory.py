"""Episode factory for live pools: ``rlroute eval cluster=live ...`` (``conf/cluster/live.yaml``).

The env builds its cluster through ``cluster_factory(cfg)`` of the ``_target_``'s module and calls the result at
every ``reset``. A simulated cluster is rebuilt per episode; live pools are processes and connections, so
:func:`live_cluster_factory` opens them once per distinct config and the per-episode call only resets them
(drain, flush every worker's cache, restart the clock: :meth:`LiveCluster.reset`). Envs built from the same
config (an evaluation builds one per policy) share one :class:`LiveCluster` instead of each leaving a background
loop and connections open. Everything opened here is closed at interpreter exit, or by
:func:`close_live_clusters`.

A pool either lists ``urls`` (real SGLang servers, or ``rlroute worker`` processes started by hand) or leaves
them empty and sets ``instances``: that many emulated workers (``rlroute worker``) with the pool's serving
``profile``, the cluster's ``speedup`` and the pool's ``cache`` preset (``mem_fraction_static``,
``eviction`` -> the worker's ``cache.policy``, ``ttl_s``) are started on loopback and stopped by PID at exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.cluster.live.cluster import LiveCluster
from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec

_SESSIONS: dict[str, _LiveSession] = {}


def _plain(cfg: Any) -> dict[str, Any]:
    """The config as plain dicts/lists (OmegaConf resolved), without ``_target_``."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra, a core dependency
        pass
    if not isinstance(cfg, Mapping):
        raise ValueError(f"cluster config: expected a mapping, got {type(cfg).__name__}")
    out = dict(cfg)
    out.pop("_target_", None)
    return out


def _worker_overrides(pool: str, cache: Any) -> list[str]:
    """``rlroute worker`` overrides reproducing the pool's cache preset (the simulator's instance model)."""
    if cache is None:
        return []
    if not isinstance(cache, Mapping):
        raise ValueError(f"cluster.pools.{pool}.cache: expected a mapping, got {cache!r}")
    out = []
    if cache.get("mem_fraction_static") is not None:
        v = cache["mem_fraction_static"]
        out.append(f"mem_fraction_static={v if v == 'auto' else float(v)}")
    if cache.get("eviction") is not None:
        out.append(f"cache.policy={cache['eviction']}")
    if cache.get("ttl_s") is not None:
        out.append(f"cache.ttl_s={float(cache['ttl_s'])}")
    return out


class _LiveSession:
    """One live cluster (and the emulated workers it needed) shared by every env of one config."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.cluster: LiveCluster | None = None
        self.fleet: WorkerFleet | None = None

    def _open(self) -> LiveCluster:
        # httpx logs every request at INFO, and Hydra apps log INFO: the scrapes alone are ~20 lines a second.
        logging.getLogger("httpx").setLevel(max(logging.getLogger("httpx").getEffectiveLevel(), logging.WARNING))
        cfg = dict(self.cfg)
        pools_cfg = cfg.pop("pools", None)
        if not isinstance(pools_cfg, Mapping) or not pools_cfg:
            raise ValueError("cluster.pools: expected a mapping pool -> {urls | instances, profile, ...}")
        speedup = float(cfg.get("speedup", 1.0))
        pools: dict[str, dict[str, Any]] = {}
        specs: list[WorkerSpec] = []
        for name, p in pools_cfg.items():
            if not isinstance(p, Mapping):
                raise ValueError(f"cluster.pools.{name}: expected a mapping, got {p!r}")
            p = dict(p)
            n = p.pop("instances", None)
            cache = p.pop("cache", None)
            if not p.get("urls"):
                if not isinstance(n, int) or isinstance(n, bool) or n < 1 or not p.get("profile"):
                    raise ValueError(f"cluster.pools.{name}: give worker 'urls', or 'instances' (int >= 1) and a "
                                     f"'profile' to start emulated workers; got urls={p.get('urls')!r}, instances={n!r}")
                specs += [WorkerSpec(str(name), str(p["profile"]), speedup, _worker_overrides(str(name), cache))] * n
            pools[str(name)] = p
        if specs:
            self.fleet = WorkerFleet(specs, Path(tempfile.mkdtemp(prefix="rlroute-live-workers-"))).start()
            for name, p in pools.items():
                if not p.get("urls"):
                    p["urls"] = self.fleet.urls(name)
        try:
            return LiveCluster(pools, **cfg)
        except BaseException:
            self.close()
            raise

    def __call__(self, rng: np.random.Generator | None = None) -> LiveCluster:
        """The episode's cluster: opened on first use, then drained, flushed and re-clocked (``reset``)."""
        if self.cluster is None:
            self.cluster = self._open()
            return self.cluster
        return self.cluster(rng)

    def close(self) -> None:
        """Close the cluster's connections and loop, then stop the workers started for it."""
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None


def live_cluster_factory(cfg: Any) -> Callable[[np.random.Generator], LiveCluster]:
    """The env's per-episode cluster factory for a ``rlroute.cluster.live.LiveCluster`` config (module doc).

    Args:
        cfg: the ``cluster`` config: ``pools`` (each ``urls`` or ``instances`` + ``profile``; ``in_pool``,
            ``cache``) and the :class:`LiveCluster` keywords (``speedup``, ``cost``, ``hybrid``, ``slo``, ...).
    """
    plain = _plain(cfg)
    key = json.dumps(plain, sort_keys=True, default=str)
    session = _SESSIONS.get(key)
    if session is None:
        session = _SESSIONS[key] = _LiveSession(plain)
    return session


def close_live_clusters() -> None:
    """Close every live cluster opened by :func:`live_cluster_factory` (also run at interpreter exit)."""
    while _SESSIONS:
        _, session = _SESSIONS.popitem()
        session.close()


atexit.register(close_live_clusters)
