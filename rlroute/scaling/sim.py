"""A scaler driving a :class:`~rlroute.cluster.sim.SimCluster`: ticks as scheduled events, ``scale`` events,
GPU-seconds accounting, an operator timeline and the optional predictive cache warm-up.

:class:`SimAutoscaler` schedules itself on the cluster's event heap every ``interval_s``; each tick builds the
:class:`~rlroute.scaling.base.Signals` from the cluster state, asks the scaler, and applies a changed
recommendation with the cluster's own ``scale`` event (new instances are unhealthy for ``startup_s +
warmup_s``; removed ones drain). Nothing is added to the per-decision path: with ``scaler=none`` no
autoscaler exists and the cluster runs exactly as before.

GPU-seconds: every instance in a pool's list (ready, starting, warming up or draining) is paid,
``num_gpus`` of its profile each, integrated between ticks with the count left by the previous tick. An
instance that finishes draining between two ticks is billed until the next tick (at most ``interval_s``
too much).

Cache warm-up (``cache_warmup: {enabled: true}``): when a new instance's start-up ends, the pool's hottest
cached prefixes -- the root segments of the serving instances' radix caches, ranked by their summed hit
counts -- are replayed into it through the router (so the router's tree of that worker records them, as
warm-up requests routed to it would), as many as its prefill time fits into ``warmup_s``
(``ServingProfile.prefill_time``) and ``max_fraction`` of its KV capacity allows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from rlroute.scaling.base import Scaler, Signals, build_scaler, pool_signals

if TYPE_CHECKING:
    from rlroute.cluster.sim.cluster import SimCluster
    from rlroute.cluster.sim.pool import SimPool

_WARMUP_KEYS = {"enabled", "max_fraction"}


class SimAutoscaler:
    """Drives ``cluster``'s pools with ``scaler`` from now on (see the module doc).

    Args:
        cluster: the simulated cluster (its pools start as configured).
        scaler: the scaler; :meth:`~rlroute.scaling.base.Scaler.reset` is called here.
        cache_warmup: ``{enabled, max_fraction}`` (default off; ``max_fraction`` 0.25 of the KV capacity).
    """

    def __init__(self, cluster: SimCluster, scaler: Scaler, cache_warmup: Mapping[str, Any] | None = None) -> None:
        for name in scaler.limits:
            if name not in cluster.pools:
                raise ValueError(f"scaler.pools.{name}: the cluster has no such pool (pools: {sorted(cluster.pools)})")
        warm = dict(cache_warmup or {})
        bad = set(warm) - _WARMUP_KEYS
        if bad:
            raise ValueError(f"scaler.cache_warmup: unknown keys {sorted(bad)}; expected {sorted(_WARMUP_KEYS)}")
        self.warm = bool(warm.get("enabled", False))
        self.warm_fraction = float(warm.get("max_fraction", 0.25))
        if not 0 < self.warm_fraction <= 1:
            raise ValueError(f"scaler.cache_warmup.max_fraction must be in (0, 1], got {self.warm_fraction}")
        self.cluster = cluster
        self.scaler = scaler
        scaler.reset()
        self.interval = scaler.interval_s
        self.gpu_s = {name: 0.0 for name in cluster.pools}
        self.timeline: list[dict[str, Any]] = []
        self.scale_events: list[tuple[float, str, int, int]] = []  # (time, pool, from, to)
        self.warmed_tokens: dict[str, int] = {name: 0 for name in cluster.pools}
        self._ready_at: dict[str, dict[int, float]] = {name: {} for name in cluster.pools}
        self._n = {name: len(p.instances) for name, p in cluster.pools.items()}
        self._done: dict[str, dict[int, int]] = {name: {} for name in cluster.pools}
        self._last_t = cluster.now
        self._last_sub = cluster.submitted
        cluster.schedule(cluster.now + self.interval, self.tick)

    # -- the tick -----------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """One scaler decision (scheduled; reschedules itself)."""
        cl = self.cluster
        now = cl.now
        dt = now - self._last_t
        for name, p in cl.pools.items():
            self.gpu_s[name] += self._n[name] * p.profile.num_gpus * dt
        arrivals = cl.submitted - self._last_sub
        self._last_sub, self._last_t = cl.submitted, now
        starting = {}
        for name, pend in self._ready_at.items():
            for i in [i for i, t in pend.items() if t <= now]:
                del pend[i]
            starting[name] = len(pend)
        done = {name: self._completed(name, p) for name, p in cl.pools.items()}
        total = sum(done.values())
        shares = {name: (d / total if total else None) for name, d in done.items()}
        state = cl.state()
        sig = Signals(now, pool_signals(state, starting, shares), arrivals, dt)
        rec = self.scaler.recommend(sig)
        for name, n in rec.items():
            active = sum(not i.retired for i in cl.pools[name].instances)
            if n != active:
                self._scale(name, active, n)
        fc = self.scaler.forecast()
        for name, s in sig.pools.items():
            ps = state.pools[name]
            self.timeline.append({
                "time": now, "pool": name, "arrivals": arrivals, "arrival_rate": sig.arrival_rate,
                "forecast_rate": fc, "ready": s.ready, "starting": s.starting, "load": s.load, "queued": s.queued,
                "share": s.share, "recommended": rec.get(name), "instances": len(cl.pools[name].instances),
                "recent_ttft": ps.recent_ttft, "gpu_s": self.gpu_s[name]})
        self._n = {name: len(p.instances) for name, p in cl.pools.items()}
        cl.schedule(now + self.interval, self.tick)

    def _completed(self, name: str, pool: SimPool) -> int:
        """Stages the pool's instances finished since the previous tick (an instance removed in between
        takes its last interval's count with it)."""
        last = self._done[name]
        now = {i.index: i.completed for i in pool.instances}
        d = sum(max(0, c - last.get(i, 0)) for i, c in now.items())
        self._done[name] = now
        return d

    def _scale(self, name: str, active: int, n: int) -> None:
        cl = self.cluster
        pool = cl.pools[name]
        lim = self.scaler.limits[name]
        before = len(pool.instances)
        cl.scale(name, n, startup_s=lim.lead_s)
        now = cl.now
        self.scale_events.append((now, name, active, n))
        pend = self._ready_at[name]
        for i in [i for i in pend if i >= len(pool.instances) or pool.instances[i].retired]:
            del pend[i]  # removed while still starting
        for inst in pool.instances[before:]:
            if lim.lead_s > 0:
                pend[inst.index] = now + lim.lead_s
                if self.warm and lim.warmup_s > 0:
                    cl.schedule(now + lim.startup_s, partial(self._warm_cache, name, inst.index))

    # -- cache warm-up ------------------------------------------------------------------------------------------
    def _warm_cache(self, name: str, index: int) -> None:
        pool = self.cluster.pools[name]
        if index >= len(pool.instances):
            return
        inst = pool.instances[index]
        if inst.retired or inst.healthy:
            return
        now = self.cluster.now
        lim = self.scaler.limits[name]
        hot: dict[tuple[int, ...], int] = {}
        bs = 0
        for other in pool.instances:
            if other is inst or not other.healthy or other.retired:
                continue
            cache = other.cache
            bs = bs or int(cache.bs or 0)
            for seg in set(cache.nodes.values()):
                if seg.depth == 0 and not seg.detached:
                    hot[seg.blocks] = hot.get(seg.blocks, 0) + seg.freq
        if not hot or bs < 1:
            return
        budget = int(self.warm_fraction * inst.kv_cap)
        used = 0
        for blocks, _ in sorted(hot.items(), key=lambda kv: -kv[1]):
            tokens = len(blocks) * bs
            if used + tokens > budget or pool.profile.prefill_time(used + tokens) > lim.warmup_s:
                continue
            used += inst.cache.insert(blocks, bs, now)
            if pool.view is not None:
                pool.view.insert(index, blocks, bs, now, tokens)
        self.warmed_tokens[name] += used

    # -- results --------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """GPU-hours per pool and in all, scale events, warmed tokens, the forecast's record."""
        hours = {name: s / 3600.0 for name, s in self.gpu_s.items()}
        return {"scaler": self.scaler.kind, "gpu_hours": hours, "gpu_hours_total": float(sum(hours.values())),
                "scale_events": len(self.scale_events), "warmed_tokens": dict(self.warmed_tokens),
                "interval_s": self.interval, "time_s": self._last_t}

    def forecast_record(self) -> tuple[np.ndarray, np.ndarray]:
        """``(times, forecast rates)`` of the ticks with a forecast (the rate predicted for that tick's
        horizon, see ``PredictiveScaler.last_horizon_s``)."""
        rows = [r for r in self.timeline if r["forecast_rate"] is not None]
        seen = set()
        t, f = [], []
        for r in rows:
            if r["time"] in seen:
                continue
            seen.add(r["time"])
            t.append(r["time"])
            f.append(r["forecast_rate"])
        return np.asarray(t), np.asarray(f)


class ScaledClusterFactory:
    """``rng -> SimCluster`` that attaches a fresh :class:`SimAutoscaler` to every cluster it builds
    (the env builds one cluster per episode); :attr:`last` is the latest autoscaler (for accounting).

    Args:
        make: the plain cluster factory.
        scaler_cfg: the ``scaler`` config group (with ``_target_``; ``cache_warmup`` read here).
    """

    def __init__(self, make: Callable[[np.random.Generator], Any], scaler_cfg: Any) -> None:
        scaler = build_scaler(scaler_cfg)
        if scaler is None:
            raise ValueError("ScaledClusterFactory needs a scaler config with a _target_ (got scaler=none)")
        self.make = make
        self.scaler_cfg = scaler_cfg
        self.cache_warmup = _get(scaler_cfg, "cache_warmup")
        self.last: SimAutoscaler | None = None

    def __call__(self, rng: np.random.Generator) -> Any:
        from rlroute.cluster.sim.cluster import SimCluster

        cluster = self.make(rng)
        if not isinstance(cluster, SimCluster):
            raise TypeError(f"scaler: the simulator's scalers drive a SimCluster, got {type(cluster).__name__} "
                            "(live pools publish recommendations from the router instead: rlroute.scaling.live)")
        scaler = build_scaler(self.scaler_cfg)
        assert scaler is not None
        warm = self.cache_warmup
        self.last = SimAutoscaler(cluster, scaler, dict(warm) if warm is not None else None)
        return cluster


def _get(cfg: Any, key: str) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key)
    return getattr(cfg, key, None)


def attach(cluster: SimCluster, scaler_cfg: Any) -> SimAutoscaler | None:
    """Attach the ``scaler`` config's scaler to ``cluster`` (None for ``scaler=none``)."""
    scaler = build_scaler(scaler_cfg)
    if scaler is None:
        return None
    warm = _get(scaler_cfg, "cache_warmup")
    return SimAutoscaler(cluster, scaler, dict(warm) if warm is not None else None)
