"""The one scaler interface: what a scaler reads (:class:`Signals`), what it may do (:class:`PoolLimits`) and
how config becomes a scaler (:func:`build_scaler`).

A scaler recommends, per pool, how many instances should be *provisioned* (ready + starting). It reads a
:class:`Signals` snapshot built from the shared :class:`~rlroute.cluster.base.ClusterState` (so the same
scaler runs in the simulator, :mod:`rlroute.scaling.sim`, and on the router's live state,
:mod:`rlroute.scaling.live`) plus the arrivals counted since the previous tick. It never starts or stops
anything itself: the simulator applies its recommendation as ``scale`` events; the router only publishes
it as a Prometheus gauge for a Kubernetes autoscaler (KEDA / HPA) to act on.

Start-up costs are per pool (``startup_s``: the server is loading weights and capturing CUDA graphs, not
routable; ``warmup_s``: it is up but kept out of rotation while it warms up) and are ASSUMPTIONS unless a
measured value is configured: no start-up time was measured in this project (``experiments/profiling``
measures step times only). The defaults in ``conf/scaler/*.yaml`` cite what they are based on.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rlroute.cluster.base import ClusterState

_LIMIT_KEYS = {"min_instances", "max_instances", "startup_s", "warmup_s", "target_load", "capacity_rps"}


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """What a scaler may do to one pool and what one instance of it carries.

    Attributes:
        min_instances: never recommend fewer (>= 1: a pool with no instance fails every request sent to it).
        max_instances: never recommend more.
        startup_s: seconds from the decision to a loaded server (weights, CUDA graphs); paid, not serving.
        warmup_s: seconds after start-up before it takes traffic (warm-up requests; cache warm-up).
        target_load: requests on an instance (queued + running) it should carry on average: the reactive
            scaler's set point, as an HPA ``target.averageValue`` on SGLang's ``num_running_reqs`` would be.
        capacity_rps: requests per second one instance carries within the SLO: the predictive scaler turns
            a forecast arrival rate into instances with it.
    """

    min_instances: int = 1
    max_instances: int = 1
    startup_s: float = 0.0
    warmup_s: float = 0.0
    target_load: float = 32.0
    capacity_rps: float = 10.0

    def __post_init__(self) -> None:
        if self.min_instances < 1:
            raise ValueError(f"min_instances must be >= 1, got {self.min_instances}")
        if self.max_instances < self.min_instances:
            raise ValueError(f"max_instances ({self.max_instances}) must be >= min_instances ({self.min_instances})")
        for name in ("startup_s", "warmup_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("target_load", "capacity_rps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def lead_s(self) -> float:
        """Seconds from a scale-up decision until the new instance serves."""
        return self.startup_s + self.warmup_s

    def clamp(self, n: int) -> int:
        """``n`` within ``[min_instances, max_instances]``."""
        return max(self.min_instances, min(self.max_instances, int(n)))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str) -> PoolLimits:
        """From a ``{min_instances, max_instances, startup_s, warmup_s, target_load, capacity_rps}`` mapping."""
        unknown = set(cfg) - _LIMIT_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(_LIMIT_KEYS)}")
        if "max_instances" not in cfg:
            raise ValueError(f"{where}.max_instances is missing (the most instances the pool may have)")
        ints = {f.name for f in fields(cls) if f.type == "int"}
        try:
            vals: dict[str, Any] = {k: (int(v) if k in ints else float(v)) for k, v in cfg.items()}
            return cls(**vals)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e


@dataclass(frozen=True, slots=True)
class PoolSignal:
    """One pool at a scaler tick, from the router's view of it.

    Attributes:
        ready: instances taking traffic.
        starting: instances provisioned but not yet taking traffic (starting up or warming up).
        load: requests on the ready instances (queued + running), summed.
        queued: requests waiting for admission on the ready instances, summed.
        share: the pool's share of the requests routed since the previous tick (stages, so a hybrid request
            counts for both pools); None when nothing was routed.
    """

    ready: int
    starting: int
    load: int
    queued: int
    share: float | None = None

    @property
    def provisioned(self) -> int:
        """Instances paid for: ready + starting."""
        return self.ready + self.starting


@dataclass(frozen=True, slots=True)
class Signals:
    """What every scaler reads at a tick: the time, each pool, and the requests that arrived since the
    previous tick (over ``interval_s`` seconds)."""

    time: float
    pools: Mapping[str, PoolSignal]
    arrivals: int
    interval_s: float

    @property
    def arrival_rate(self) -> float:
        """Requests per second over the last interval."""
        return self.arrivals / self.interval_s if self.interval_s > 0 else 0.0


def pool_signals(state: ClusterState, starting: Mapping[str, int], shares: Mapping[str, float | None]) -> dict[
        str, PoolSignal]:
    """:class:`PoolSignal` per pool from a cluster state (healthy instances are the ready ones)."""
    out = {}
    for name, ps in state.pools.items():
        ready = [i for i in ps.instances if i.healthy]
        out[name] = PoolSignal(ready=len(ready), starting=int(starting.get(name, 0)),
                               load=sum(i.queued + i.running for i in ready), queued=sum(i.queued for i in ready),
                               share=shares.get(name))
    return out


class Scaler(ABC):
    """Recommends a provisioned instance count per pool at each tick (every ``interval_s`` seconds).

    Args:
        pools: pool name -> :class:`PoolLimits` (or its config mapping); pools not named are not scaled.
        interval_s: seconds between ticks.
    """

    kind = "scaler"

    def __init__(self, pools: Mapping[str, Any], interval_s: float = 30.0) -> None:
        if not pools:
            raise ValueError("scaler.pools is empty: name at least one pool with its limits")
        if not interval_s > 0:
            raise ValueError(f"scaler.interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self.limits: dict[str, PoolLimits] = {
            str(k): v if isinstance(v, PoolLimits) else PoolLimits.from_config(dict(v), f"scaler.pools.{k}")
            for k, v in pools.items()}

    def reset(self) -> None:  # noqa: B027 - a scaler without memory has nothing to forget
        """Forget everything observed (a new episode)."""

    @abstractmethod
    def recommend(self, signals: Signals) -> dict[str, int]:
        """Provisioned instances per scaled pool, each within its limits."""

    def forecast(self) -> float | None:
        """The arrival rate (req/s) this scaler expects at its horizon, if it forecasts; None otherwise."""
        return None


def hpa_desired(current: int, metric: float, target: float, tolerance: float) -> int:
    """Kubernetes HPA's rule: ``ceil(current * metric / target)``, unchanged within ``tolerance`` of 1
    (kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale, "Algorithm details")."""
    if current <= 0:
        return 1 if metric > 0 else 0
    ratio = metric / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio)


def build_scaler(cfg: Any) -> Scaler | None:
    """The scaler of the ``scaler`` config group (``conf/scaler/``); None for ``scaler=none`` or no group."""
    if cfg is None:
        return None
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    assert isinstance(plain, dict)
    target = plain.pop("_target_", None)
    if target is None:
        return None  # conf/scaler/none.yaml
    from hydra.utils import get_class

    cls = get_class(str(target))
    if not (isinstance(cls, type) and issubclass(cls, Scaler)):
        raise ValueError(f"scaler._target_ must name a rlroute.scaling.Scaler subclass, got {target!r}")
    for key in ("cache_warmup",):  # the simulator's options, read by rlroute.scaling.sim
        plain.pop(key, None)
    return cls(**{str(k): v for k, v in plain.items()})
