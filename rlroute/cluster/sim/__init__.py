"""Discrete-event simulator of heterogeneous SGLang pools (``SimCluster``) and its Hydra builder.

Build it either way from the composed config:

* ``hydra.utils.instantiate(cfg.cluster, rng=rng)`` (``conf/cluster/*.yaml`` carry
  ``_target_: rlroute.cluster.sim.SimCluster``), or
* ``rlroute.cluster.sim.build_cluster(cfg.cluster, rng)`` (ignores ``_target_``; same result).
"""

from rlroute.cluster.sim.cluster import SimCluster, build_cluster
from rlroute.cluster.sim.events import EVENTS

__all__ = ["EVENTS", "SimCluster", "build_cluster"]
