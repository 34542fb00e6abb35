"""Live pools: the ``Cluster`` protocol over SGLang-protocol HTTP workers (emulated or real SGLang).

``LiveCluster(pools={"large": {"urls": [...], "profile": ...}, "small": {...}}, speedup=...)``; see
:mod:`rlroute.cluster.live.cluster`. Build from Hydra with ``conf/cluster/live.yaml``.
"""

from rlroute.cluster.live.cluster import LiveCluster
from rlroute.cluster.live.factory import live_cluster_factory as cluster_factory

__all__ = ["LiveCluster", "cluster_factory"]
