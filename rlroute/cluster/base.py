"""The ``Cluster`` protocol and its typed state, shared by the simulator and live pools.

Features and policies read these dataclasses only, never raw dicts or Prometheus text, so the same code
serves the simulator and the live router. Times are seconds, latencies are seconds, rates per second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from rlroute.types import Action, Completion, Request


@dataclass(slots=True)
class InstanceState:
    """One serving instance (one SGLang server) as seen at a point in time."""

    index: int
    healthy: bool = True
    paused: bool = False
    queued: int = 0
    running: int = 0
    kv_used_tokens: int = 0
    kv_capacity_tokens: int = 1
    cache_tokens: int = 0  # tokens held by the prefix cache (in use or evictable)
    recent_ttft: float = 0.0  # exponentially weighted, seconds
    recent_tpot: float = 0.0
    recent_e2e: float = 0.0
    throughput: float = 0.0  # output tokens per second, recent window
    cache_hit_rate: float = 0.0  # token-weighted, recent window
    evictions_rate: float = 0.0  # evicted tokens per second, recent window
    cost: float = 0.0  # accumulated cost so far


@dataclass(slots=True)
class PoolState:
    """A pool of instances of one model with its aggregate, recent-window statistics."""

    name: str
    instances: list[InstanceState] = field(default_factory=list)
    recent_ttft: float = 0.0
    recent_tpot: float = 0.0
    recent_e2e: float = 0.0
    throughput: float = 0.0
    cache_hit_rate: float = 0.0
    slo_violation_rate: float = 0.0  # share of recent completions that missed an SLO
    cost_rate: float = 0.0  # cost per second, recent window
    cost: float = 0.0
    last_weight_update: float | None = None  # cluster time of the last weight update, None if never

    @property
    def available(self) -> bool:
        """True when at least one instance is healthy and not paused."""
        return any(i.healthy and not i.paused for i in self.instances)


@dataclass(slots=True)
class ClusterState:
    """Snapshot of the whole cluster. The simulator may return a live view that is only valid until the
    next ``submit``/``advance``; copy it if you keep it."""

    time: float
    pools: dict[str, PoolState]
    arrival_rate: float = 0.0  # requests per second, recent estimate
    day_offset: float = 0.0  # second of the day at time 0: the wall clock's for live pools, 0 for trace time


@runtime_checkable
class Cluster(Protocol):
    """A set of pools that accepts routed requests; implemented by ``sim`` and ``live``."""

    @property
    def now(self) -> float:
        """Current cluster time in seconds."""
        ...

    def state(self) -> ClusterState:
        """Current state snapshot."""
        ...

    def prefix_match(self, request: Request) -> dict[str, list[int]]:
        """Matched prompt tokens the request would get on each instance, per pool."""
        ...

    def submit(self, request: Request, action: Action) -> None:
        """Route ``request`` with ``action``; the in-pool policy picks the instance."""
        ...

    def advance(self, until: float) -> list[Completion]:
        """Run until cluster time ``until``; return the completions (and failures) that happened."""
        ...


def state_to_json(state: ClusterState) -> dict[str, object]:
    """A snapshot as plain JSON types (floats round-trip exactly through ``json``)."""
    return asdict(state)


def state_from_json(data: Mapping[str, Any]) -> ClusterState:
    """Rebuild a snapshot written by :func:`state_to_json`.

    Raises:
        ValueError: naming the field that is missing or malformed.
    """
    try:
        pools = {}
        for name, p in dict(data["pools"]).items():
            fields = {k: v for k, v in dict(p).items() if k != "instances"}
            pools[str(name)] = PoolState(instances=[InstanceState(**dict(i)) for i in p["instances"]], **fields)
        return ClusterState(time=float(data["time"]), pools=pools, arrival_rate=float(data.get("arrival_rate", 0.0)),
                            day_offset=float(data.get("day_offset", 0.0)))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"cluster state: expected {{time, pools: {{name: {{instances: [...], ...}}}}, "
                         f"arrival_rate, day_offset}}, got an unreadable snapshot ({type(e).__name__}: {e})") from e
