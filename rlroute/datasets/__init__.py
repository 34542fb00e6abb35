"""rlroute.datasets: the public data sets the real-data workloads read -- registry, lookup, download.

``rlroute data list`` / ``rlroute data download NAME...`` (:mod:`rlroute.datasets.cli`). Loaders call
:func:`require` / :func:`resolve` (:mod:`rlroute.datasets.store`), which search an explicit path,
``$RLROUTE_DATA``, the cache folder and ``../shared/data`` in that order and never touch the network.
"""

from rlroute.datasets.registry import DataFile, Dataset, owner_of, registry
from rlroute.datasets.store import (
           DataMissing,
           cache_dir,
           data_roots,
           download_dir,
           require,
           resolve,
           shared_data_dir,
)

__all__ = ["DataFile", "DataMissing", "Dataset", "cache_dir", "data_roots", "download_dir", "owner_of", "registry",
           "require", "resolve", "shared_data_dir"]
