"""The ``Cluster`` contract and its typed state, shared by the simulator, the live pools and the router.

Features and policies read these dataclasses only, never raw dicts or Prometheus text, so the same code
serves the simulator and the live router. Times are seconds, latencies are seconds, rates per second.
Everything the env, the evaluator and the router call on a cluster is declared here: the
:class:`Cluster` protocol (state, prefix matches, submit, advance, drain, its :class:`CostModel` and its
:class:`Hybrid` settings), what an action means (:func:`action_stages`, :data:`ACTION_POOLS`,
:func:`action_mask`) and the smoothing of the "recent" statistics (:data:`EWMA`, :data:`TAU`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rlroute.types import Action, Completion, Request

# Shared smoothing of the "recent" statistics, the same in the simulator, the live pools and the router
# (so a feature means one thing in all three). Both are assumed values, not taken from SGLang: EWMA gives
# the latency averages a memory of about ten completions, TAU a one-minute window to the rates.
EWMA = 0.1  # weight of the newest completion in the recent TTFT/TPOT/e2e averages and the SLO-miss rate
TAU = 60.0  # seconds: decay constant of the recent rates (throughput, hit rate, evictions, arrivals, cost)

HYBRID_MODES = ("plan_and_execute", "cascade")

# Pools an action needs available to be allowed (hybrid uses both in either mode: cascade may escalate).
ACTION_POOLS: dict[Action, tuple[str, ...]] = {
    Action.LARGE: ("large",),
    Action.SMALL: ("small",),
    Action.HYBRID: ("large", "small"),
}


@dataclass(frozen=True, slots=True)
class Hybrid:
    """What the hybrid action does: ``plan_and_execute`` (the large pool writes a ``plan_tokens`` plan, the
    small pool answers with it appended to the prompt) or ``cascade`` (the small pool answers, the large
    pool again when the quality draw says it escalated)."""

    mode: str = "plan_and_execute"
    plan_tokens: int = 64

    def __post_init__(self) -> None:
        if self.mode not in HYBRID_MODES:
            raise ValueError(f"hybrid.mode must be one of {HYBRID_MODES}, got {self.mode!r}")
        if self.plan_tokens < 1:
            raise ValueError(f"hybrid.plan_tokens must be >= 1, got {self.plan_tokens}")

    @classmethod
    def of(cls, cfg: Any, base: Hybrid | None = None) -> Hybrid:
        """From a mapping or an object with ``mode`` / ``plan_tokens`` (e.g. the quality model's ``hybrid``);
        a key it lacks keeps ``base``'s value (default: the defaults above). None gives ``base``."""
        base = base if base is not None else cls()
        if cfg is None or isinstance(cfg, Hybrid):
            return cfg or base
        get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d: getattr(cfg, k, d))
        return cls(str(get("mode", base.mode)), int(get("plan_tokens", base.plan_tokens)))


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


Stage = tuple[str, int, int, int]
"""One placement of a routed request on a pool, ``(pool, prompt, output, max_new)``: prompt tokens (a
plan-and-execute answer stage carries the plan too), tokens generated, and what the engine may know of the
output (the client's cap; the plan's length for a plan stage). A plain tuple: built on every decision."""


def action_stages(action: Action, request: Request, hybrid: Hybrid) -> list[Stage]:
    """The stages ``action`` runs ``request`` through (the one mapping of an action to pools and tokens)."""
    n_in, n_out = request.input_len, request.output_len
    cap = request.max_new_tokens if request.max_new_tokens is not None else n_out
    if action == Action.LARGE:
        return [("large", n_in, n_out, cap)]
    if action == Action.SMALL:
        return [("small", n_in, n_out, cap)]
    if hybrid.mode == "plan_and_execute":
        plan = hybrid.plan_tokens
        return [("large", n_in, plan, plan), ("small", n_in + plan, n_out, cap)]
    q = request.quality
    first = ("small", n_in, n_out, cap)
    return [first, ("large", n_in, n_out, cap)] if q is not None and q.escalated else [first]


def action_mask(state: ClusterState, out: np.ndarray | None = None) -> np.ndarray:
    """``bool[3]``: large / small allowed when the pool has a healthy unpaused instance, hybrid when both
    are; all True when nothing is (so a maskable policy always has an action). Written into ``out`` if given."""
    pools = state.pools
    large = pools["large"].available if "large" in pools else False
    small = pools["small"].available if "small" in pools else False
    mask = out if out is not None else np.empty(len(ACTION_POOLS), dtype=bool)
    if large or small:
        mask[0], mask[1], mask[2] = large, small, large and small
    else:
        mask[:] = True
    return mask


@runtime_checkable
class CostModel(Protocol):
    """Prices a request stage in USD (``rlroute.cluster.cost``): the env prices a decision with it when
    it is made, the clusters bill completed stages with it."""

    def request_cost(self, pool: str, prompt_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """USD for one stage of ``prompt_tokens`` (``cached_tokens`` of them cached) and ``output_tokens``."""
        ...


@runtime_checkable
class Cluster(Protocol):
    """A set of pools that accepts routed requests; implemented by ``sim`` and ``live``.

    ``hybrid`` is what the hybrid action does (the env sets it from the quality model's assumptions at
    each reset); ``cost_model`` prices stages (decisions in the env, completions in the cluster)."""

    hybrid: Hybrid

    @property
    def cost_model(self) -> CostModel:
        """The stage pricing this cluster bills completions with."""
        ...

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

    def drain(self) -> list[Completion]:
        """Finish every request in flight (a failure with a reason when it cannot); return the completions
        since the last ``advance``."""
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
