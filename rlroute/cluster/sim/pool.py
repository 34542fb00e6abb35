"""A pool of instances of one model: profile, cache configuration, in-pool policy and pool metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlroute.cluster.base import EWMA, TAU
from rlroute.cluster.inpool import InPoolPolicy, build_in_pool
from rlroute.cluster.profiles import ServingProfile, load_profile
from rlroute.cluster.profiles.sglang_defaults import resolve_mem_fraction
from rlroute.cluster.router_view import RouterView, RouterViewConfig
from rlroute.cluster.sim.instance import DecayClock, Instance
from rlroute.cluster.sim.legacy_instance import LegacyInstance
from rlroute.cluster.sim.prefix_cache import PrefixCache
from rlroute.cluster.sim.scheduler import SchedulerConfig, parse_scheduler
from rlroute.cluster.sim.sglang_instance import SGLangInstance

_POOL_KEYS = {"profile", "instances", "cache", "in_pool", "scheduler"}
_CACHE_KEYS = {"mem_fraction_static", "eviction", "ttl_s", "kv_capacity_tokens", "insert_outputs"}
INSTANCE_CLASSES: dict[str, type[Instance]] = {"sglang": SGLangInstance, "legacy": LegacyInstance}


class SimPool:
    """Instances of one model behind one in-pool policy.

    Args:
        name: pool name (``large`` / ``small``).
        cfg: ``{profile, instances, cache: {mem_fraction_static, eviction, ttl_s, kv_capacity_tokens,
            insert_outputs}, in_pool: <in-pool policy: conf/cluster/in_pool/ preset or built object>,
            scheduler: {kind: sglang|legacy, ...}}`` (:mod:`rlroute.cluster.sim.scheduler`; absent = SGLang's
            defaults).
        rng: generator for randomised in-pool policies.
        factory: builds an :class:`Instance` for this pool at an index (the cluster wires callbacks).
        dclock: the cluster's decay clock for recent rates.
        router_view: where prefix matches come from: enabled = the router's approximate trees
            (:class:`rlroute.cluster.router_view.RouterView`, ``self.view``), else the engines' caches.
    """

    def __init__(self, name: str, cfg: Mapping[str, Any], rng: np.random.Generator,
                 factory: Callable[[SimPool, int], Instance], dclock: DecayClock | None = None,
                 router_view: RouterViewConfig | None = None) -> None:
        cfg = dict(cfg)
        unknown = set(cfg) - _POOL_KEYS
        if unknown:
            raise ValueError(f"cluster.pools.{name}: unknown keys {sorted(unknown)}; expected {sorted(_POOL_KEYS)}")
        if "profile" not in cfg:
            raise ValueError(f"cluster.pools.{name}.profile is missing (a serving profile name)")
        self.name = name
        self.profile: ServingProfile = load_profile(str(cfg["profile"]))
        cache = dict(cfg.get("cache") or {})
        bad = set(cache) - _CACHE_KEYS
        if bad:
            raise ValueError(f"cluster.pools.{name}.cache: unknown keys {sorted(bad)}; expected {sorted(_CACHE_KEYS)}")
        self.mem_fraction_static = resolve_mem_fraction(cache.get("mem_fraction_static", "auto"), self.profile,
                                                        f"cluster.pools.{name}.cache")
        self.eviction = str(cache.get("eviction", "lru"))
        ttl = cache.get("ttl_s")
        self.ttl_s = float(ttl) if ttl is not None else None
        try:
            PrefixCache(self.eviction, self.ttl_s)
        except ValueError as exc:
            raise ValueError(f"cluster.pools.{name}.cache: {exc}") from exc
        # kv_capacity_tokens overrides the profile formula (tests, what-if studies); null = from the profile
        kv = cache.get("kv_capacity_tokens")
        self.kv_cap = int(kv) if kv is not None else self.profile.kv_capacity_tokens(self.mem_fraction_static)
        if self.kv_cap < 1:
            raise ValueError(f"cluster.pools.{name}.cache.kv_capacity_tokens must be >= 1, got {kv}")
        # cache_finished_req: a finished request's output enters the cache (instance module doc)
        self.insert_outputs = bool(cache.get("insert_outputs", True))
        self.sched: SchedulerConfig = parse_scheduler(cfg.get("scheduler"), f"cluster.pools.{name}.scheduler")
        self.instance_cls = INSTANCE_CLASSES[self.sched.kind]
        self.policy: InPoolPolicy = build_in_pool(cfg.get("in_pool"), f"cluster.pools.{name}.in_pool")
        self.policy.seed(rng)
        self._factory = factory
        n = int(cfg.get("instances", 1))
        if n < 1:
            raise ValueError(f"cluster.pools.{name}.instances must be >= 1, got {n}")
        self.instances: list[Instance] = [factory(self, i) for i in range(n)]
        # the router's "tree size" per instance when matches come from the engines' caches: prompt tokens
        # routed there by the in-pool policy that were not cached (sglang-router's tree is bounded only by
        # max_tree_size, 2^26 characters by default, so it keeps growing; a KV cache saturates)
        self.routed_new = [0] * n
        rv = router_view if router_view is not None else RouterViewConfig()
        self.view: RouterView | None = RouterView(n, rv) if rv.enabled else None
        self.paused = False
        self.last_weight_update: float | None = None
        self.weight_updates = 0
        self.recent_ttft = self.recent_tpot = self.recent_e2e = self.slo_rate = self.recent_out = 0.0
        self.cost = 0.0
        self.r_cost = 0.0  # forward-decayed cost (see DecayClock)
        self.dclock = dclock if dclock is not None else DecayClock()
        self.dclock.members.append(self)
        # the router's view of failures (rlroute.cluster.sim.faults): down but not yet detected (index ->
        # failure time), back up but not yet taking traffic, and the bookkeeping of each failure
        self.undetected: dict[int, float] = {}
        self.unroutable: set[int] = set()
        self.fail_epoch: dict[int, int] = {}
        self.fail_time: dict[int, float] = {}
        self.fail_mode: dict[int, str] = {}
        self.cb_fails: dict[int, int] = {}
        self.detections: list[tuple[float, float]] = []  # (failed at, detected at)
        self.lost_cost = 0.0  # cost of work thrown away by failures (also in the requests' cost)
        self.lost_gpu_s = 0.0  # its GPU-seconds (engine seconds x GPUs)

    def routable(self, inst: Instance) -> bool:
        """Whether the router sends new requests to ``inst``: serving and not retired, or down but not yet
        detected (it still looks healthy to the router)."""
        if inst.retired:
            return False
        i = inst.index
        return (inst.healthy and i not in self.unroutable) or i in self.undetected

    def new_cache(self, index: int, log: bool) -> PrefixCache:
        """A fresh, empty cache for instance ``index``."""
        return PrefixCache(self.eviction, self.ttl_s, None, log)

    def candidates(self) -> list[Instance]:
        """Instances the router may send new requests to (:meth:`routable`)."""
        insts = self.instances
        if not (self.undetected or self.unroutable):
            for i in insts:
                if not i.healthy or i.retired:
                    return [i for i in insts if i.healthy and not i.retired]
            return insts[:]  # the usual case, without building the list element by element
        return [i for i in insts if self.routable(i)]

    def match(self, blocks: tuple[int, ...], bs: int, covered: int, now: float) -> list[int]:
        """Cached prompt tokens of a prompt (``blocks`` covering ``covered`` tokens) on every instance, as the
        router sees them (:attr:`view`) or, without one, from the engines' caches; 0 for unhealthy ones."""
        if self.view is not None:
            out = self.view.match(blocks, bs, covered, now)
            for inst in self.instances:
                if not inst.healthy:
                    out[inst.index] = 0
            return out
        nb = len(blocks)
        out = []
        if not nb:
            return [0] * len(self.instances)
        b0 = blocks[0]
        for inst in self.instances:
            cache = inst.cache
            if now >= cache.expire_at:
                cache.expire(now)
            nodes = cache.nodes
            seg = nodes.get(b0)
            if seg is None or seg.depth or not inst.healthy:
                out.append(0)
                continue
            # PrefixCache.probe inlined (this runs for every instance of the pool on every decision)
            i = 0
            while True:
                sb = seg.blocks
                n_sb = len(sb)
                if blocks[i:i + n_sb] == sb:
                    i += n_sb
                    if i >= nb:
                        break
                    seg = nodes.get(blocks[i])
                    if seg is None or seg.depth != i:
                        break
                    continue
                j = 1
                lim = min(n_sb, nb - i)
                while j < lim and blocks[i + j] == sb[j]:
                    j += 1
                i += j
                break
            out.append(covered if i == nb else i * bs)
        return out

    def record(self, t: float, ttft: float, tpot: float, e2e: float, output: int, cost: float,
               slo_miss: bool) -> None:
        """Fold one finished stage into the pool's recent averages and cost."""
        self.recent_ttft += EWMA * (ttft - self.recent_ttft)
        self.recent_tpot += EWMA * (tpot - self.recent_tpot)
        self.recent_e2e += EWMA * (e2e - self.recent_e2e)
        self.recent_out += EWMA * (output - self.recent_out)
        self.slo_rate += EWMA * (float(slo_miss) - self.slo_rate)
        self.cost += cost
        w = self.dclock.weight(t)  # first: a clock rebase rescales r_cost
        self.r_cost += cost * w

    def rescale(self, f: float) -> None:
        """Decay clock rebase."""
        self.r_cost *= f

    def cost_rate(self, now: float) -> float:
        """Cost per second over the recent window."""
        return self.r_cost * self.dclock.factor(now) / TAU

    def add_instance(self) -> Instance:
        """Append a fresh instance (scale-up)."""
        inst = self._factory(self, len(self.instances))
        inst.paused = self.paused
        self.instances.append(inst)
        self.routed_new.append(0)
        if self.view is not None:
            self.view.add()
        return inst

    def prune(self) -> None:
        """Drop drained, retired instances from the tail (indices of the others stay stable)."""
        insts = self.instances
        while len(insts) > 1 and insts[-1].retired and not insts[-1].load:
            gone = insts.pop()
            gone.cache.clear()
            self.routed_new.pop()
            if self.view is not None:
                self.view.pop()
            for d in (self.undetected, self.fail_epoch, self.fail_time, self.fail_mode, self.cb_fails):
                d.pop(gone.index, None)
            self.unroutable.discard(gone.index)
