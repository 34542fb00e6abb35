"""The ``Cluster`` contract and its typed state, shared by the simulator, the live pools and the router.

Features and policies read these dataclasses only, never raw dicts or Prometheus text, so the same code
serves the simulator and the live router. Times are seconds, latencies are seconds, rates per second.
Everything the env, the evaluator and the router call on a cluster is declared here: the
:class:`Cluster` protocol (state, prefix matches, submit, advance, drain, its :class:`CostModel` and its
:class:`Hybrid` settings), what an action means (:func:`action_stages`, :func:`warmup_stage`, :data:`ACTION_POOLS`,
:func:`action_mask`) and the smoothing of the "recent" statistics (:data:`EWMA`, :data:`TAU`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rlroute.types import Action, Completion, Request

# Shared smoothing of the "recent" statistics, the same in the simulator, the live pools and the router
# (so a feature means one thing in all three). Both are assumed values, not taken from SGLang: EWMA gives
# the latency averages a memory of about ten completions, TAU a one-minute window to the rates.
EWMA = 0.1  # weight of the newest completion in the recent TTFT/TPOT/e2e averages and the SLO-miss rate
TAU = 60.0  # seconds: decay constant of the recent rates (throughput, hit rate, evictions, arrivals, cost)

HYBRID_MODES = ("plan_and_execute", "pipelined", "cascade")
PLAN_MODES = ("plan_and_execute", "pipelined")  # the modes in which the large pool writes a plan

# Pools an action needs available to be allowed (hybrid uses both in every mode: cascade may escalate).
ACTION_POOLS: dict[Action, tuple[str, ...]] = {
    Action.LARGE: ("large",),
    Action.SMALL: ("small",),
    Action.HYBRID: ("large", "small"),
}


@dataclass(frozen=True, slots=True)
class Hybrid:
    """What the hybrid action does. Three modes:

    * ``plan_and_execute`` (the default, serial): the large pool writes a plan, then the small pool answers
      with the plan placed after the prompt (after, so a prompt already in its cache still matches).
    * ``pipelined``: the same two stages, but when hybrid is chosen the small instance that will execute is
      picked at once and the prompt is prefilled there (a prefill-only request, SGLang's
      ``max_new_tokens: 0``: ``Req.is_prefill_only`` in ``sglang/srt/managers/schedule_batch.py``; its radix
      cache keeps the prompt) *while* the large pool plans; the answer then goes to that instance and only
      has to prefill the plan (:func:`warmup_stage`). The warm-up is real work on the small pool: it is
      queued, batched, billed and counted in the pool's statistics like any request.
    * ``cascade``: the small pool answers, the large pool again when the quality draw says it escalated.

    Plan length (both plan modes): ``plan_tokens`` when ``plan_sigma`` is 0 (the default: a fixed plan,
    the behaviour every earlier run used); otherwise drawn per request from a log-normal with median
    ``plan_tokens`` and log-space spread ``plan_sigma``, at most ``plan_cap`` (:func:`plan_length`). The
    log-normal is an ASSUMPTION: no planner's plan lengths were measured here; the shape follows how
    generated lengths spread in a production trace (Azure LLM inference trace 2023, code: log-sd 0.85 of
    ``GeneratedTokens`` over 8,819 requests, median 13; ``experiments/hybrid_pipeline/README.md``). With a
    spread, the engine is asked for ``plan_cap`` tokens (it cannot know where the plan ends); with a fixed
    plan, for ``plan_tokens``. The plan is counted in cost and latency in every mode.

    TTFT of a hybrid is the first token the *client* sees: the answer's first token. The plan is not
    streamed to the client (it is the large model's note to the small one), so TTFT includes the whole plan
    in both plan modes; the pipelined mode shortens it by the prompt's prefill on the small pool.
    """

    mode: str = "plan_and_execute"
    plan_tokens: int = 64
    plan_sigma: float = 0.0
    plan_cap: int = 512

    def __post_init__(self) -> None:
        if self.mode not in HYBRID_MODES:
            raise ValueError(f"hybrid.mode must be one of {HYBRID_MODES}, got {self.mode!r}")
        if self.plan_tokens < 1:
            raise ValueError(f"hybrid.plan_tokens must be >= 1, got {self.plan_tokens}")
        if not 0.0 <= self.plan_sigma <= 3.0:
            raise ValueError(f"hybrid.plan_sigma must be in [0, 3] (log-space spread), got {self.plan_sigma}")
        if self.plan_cap < 1:
            raise ValueError(f"hybrid.plan_cap must be >= 1, got {self.plan_cap}")

    @classmethod
    def of(cls, cfg: Any, base: Hybrid | None = None) -> Hybrid:
        """From a mapping or an object with ``mode`` / ``plan_tokens`` / ``plan_sigma`` / ``plan_cap`` (e.g. the
        quality model's ``hybrid``); a key it lacks keeps ``base``'s value (default: the defaults above). None
        gives ``base``."""
        base = base if base is not None else cls()
        if cfg is None or isinstance(cfg, Hybrid):
            return cfg or base
        get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d: getattr(cfg, k, d))
        return cls(str(get("mode", base.mode)), int(get("plan_tokens", base.plan_tokens)),
                   float(get("plan_sigma", base.plan_sigma)), int(get("plan_cap", base.plan_cap)))


_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
_NORMAL = NormalDist()


def plan_length(request: Request, hybrid: Hybrid) -> int:
    """Tokens of ``request``'s plan (:class:`Hybrid`): fixed, or a log-normal draw keyed by the request id.

    The draw is a pure function of ``request.id`` (a splitmix64 hash to a uniform, through the normal
    quantile), so the env's decision-time price, the simulator and every fork see the same plan without
    sharing a random stream, and the default (fixed) plan draws nothing."""
    if hybrid.plan_sigma == 0.0:
        return min(hybrid.plan_tokens, hybrid.plan_cap)
    z = (request.id * _GOLDEN + _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    u = ((z ^ (z >> 31)) + 0.5) / 2.0**64
    n = round(hybrid.plan_tokens * math.exp(hybrid.plan_sigma * _NORMAL.inv_cdf(u)))
    return max(1, min(n, hybrid.plan_cap))


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
    recent_output_tokens: float = 0.0  # output tokens per completed stage, exponentially weighted (EWMA)
    last_weight_update: float | None = None  # cluster time of the last weight update, None if never

    @property
    def available(self) -> bool:
        """True when at least one instance is healthy and not paused."""
        for i in self.instances:  # noqa: SIM110 - a loop, not any(generator): read on every routing decision
            if i.healthy and not i.paused:
                return True
        return False


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
plan-mode answer stage carries the plan too), tokens generated, and what the engine may know of the
output (the client's cap; for a plan stage the plan's length, or ``plan_cap`` when plans vary; 0 for a
prefill-only warm-up). A plain tuple: built on every decision."""


def action_stages(action: Action, request: Request, hybrid: Hybrid) -> list[Stage]:
    """The stages ``action`` runs ``request`` through, in order (the one mapping of an action to pools and
    tokens). A pipelined hybrid's warm-up is not a stage here (it runs beside the plan, not before it): see
    :func:`warmup_stage`."""
    n_in, n_out = request.input_len, request.output_len
    cap = request.max_new_tokens if request.max_new_tokens is not None else n_out
    if action == Action.LARGE:
        return [("large", n_in, n_out, cap)]
    if action == Action.SMALL:
        return [("small", n_in, n_out, cap)]
    if hybrid.mode in PLAN_MODES:
        plan = plan_length(request, hybrid)
        asked = hybrid.plan_cap if hybrid.plan_sigma else plan
        return [("large", n_in, plan, asked), ("small", n_in + plan, n_out, cap)]
    q = request.quality
    first = ("small", n_in, n_out, cap)
    return [first, ("large", n_in, n_out, cap)] if q is not None and q.escalated else [first]


def warmup_stage(action: Action, request: Request, hybrid: Hybrid) -> Stage | None:
    """The pipelined hybrid's warm-up, ``("small", prompt, 0, 0)``: a prefill-only request started with the
    plan on the small instance the answer will go to; None for every other action and mode."""
    if action != Action.HYBRID or hybrid.mode != "pipelined":
        return None
    return ("small", request.input_len, 0, 0)


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
