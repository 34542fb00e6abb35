"""The typed state view of a ``SimCluster``'s pools: ``ClusterState`` objects refreshed in place.

Allocating ~10 dataclasses per decision would cost more than the decision; instead one set of
``InstanceState``/``PoolState`` objects is kept and overwritten on each ``state()`` call. Callers that
keep a state across ``submit``/``advance`` must copy it (``copy.deepcopy``), as the contract allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rlroute.cluster.base import TAU, ClusterState, InstanceState, PoolState
from rlroute.cluster.sim.instance import DecayClock

if TYPE_CHECKING:
    from rlroute.cluster.sim.pool import SimPool


class StateView:
    """Holds the state objects of a set of pools and refreshes them from the simulation.

    Args:
        pools: the simulated pools, by name (read, never written, except the caches' due expiries).
        dclock: the decay clock the pools' and instances' forward-decayed sums are kept against.
    """

    def __init__(self, pools: Mapping[str, SimPool], dclock: DecayClock) -> None:
        self.pools = pools
        self.dclock = dclock
        self.state = ClusterState(time=0.0, pools={name: PoolState(name=name) for name in pools})

    def refresh(self, now: float, arrivals: float, day_offset: float) -> ClusterState:
        """Bring every field up to cluster time ``now`` and return the (shared) state object.

        Args:
            now: cluster time.
            arrivals: the cluster's forward-decayed arrival count (kept against :attr:`dclock`).
            day_offset: second of the day at cluster time 0 (time-of-day features).
        """
        st = self.state
        st.time = now
        st.day_offset = day_offset
        f = self.dclock.factor(now) / TAU  # one exp for every recent rate below (forward decay)
        st.arrival_rate = arrivals * f
        for name, pool in self.pools.items():
            ps = st.pools[name]
            insts = pool.instances
            states = ps.instances
            if len(states) != len(insts):
                states = ps.instances = [InstanceState(index=i) for i in range(len(insts))]
            thr = hit = tok = 0.0
            faulty = bool(pool.undetected or pool.unroutable)
            for inst, s in zip(insts, states, strict=True):
                cache = inst.cache
                if now >= cache.expire_at:
                    cache.expire(now)
                if cache.evicted_tokens != inst.evicted_seen:
                    inst.note_evictions(now)
                # read after note_evictions: a decay-clock rebase there rescales these
                r_out, r_hit, r_tok = inst.r_out, inst.r_hit, inst.r_tok
                # the router's view: a failed instance counts as healthy until its failure is detected
                s.healthy = pool.routable(inst) if faulty else inst.healthy and not inst.retired
                s.paused = inst.paused
                queued = len(inst.waiting)
                s.queued = queued
                s.running = inst.nload - queued
                total = cache.total_tokens
                s.kv_used_tokens = total + inst.private
                s.kv_capacity_tokens = inst.kv_cap
                s.cache_tokens = total
                s.recent_ttft = inst.recent_ttft
                s.recent_tpot = inst.recent_tpot
                s.recent_e2e = inst.recent_e2e
                s.throughput = r_out * f
                s.cache_hit_rate = r_hit / r_tok if r_tok > 0 else 0.0
                s.evictions_rate = inst.r_evict * f
                s.cost = inst.cost
                thr += r_out
                hit += r_hit
                tok += r_tok
            ps.recent_ttft = pool.recent_ttft
            ps.recent_tpot = pool.recent_tpot
            ps.recent_e2e = pool.recent_e2e
            ps.throughput = thr * f
            ps.cache_hit_rate = hit / tok if tok > 0 else 0.0
            ps.slo_violation_rate = pool.slo_rate
            ps.recent_output_tokens = pool.recent_out
            ps.cost_rate = pool.r_cost * f
            ps.cost = pool.cost
            ps.last_weight_update = pool.last_weight_update
        return st
