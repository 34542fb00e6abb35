"""rlroute.features: the 224-dim observation (128 request + 64 system + 32 cache), one schema for all.

``extract(request, state, matches)`` computes it from a :class:`~rlroute.types.Request`, the typed
:class:`~rlroute.cluster.base.ClusterState` and the cluster's prefix matches, identically in the
simulator, the evaluator and the serving router. ``SCHEMA`` carries the names, bounds, ``version`` and
``hash``; ``complexity(request)`` is the seed heuristic's score. The table below is generated from the
schema at import (and written to docs/features.md by ``python -m rlroute.features.docs``), so it cannot
drift from the code.

Transforms: ``lin`` is ``clip(x * scale, min, max)``; ``log`` is ``clip(log1p(x / unit) / log1p(cap /
unit), min, max)``, written ``log1p(x/unit)/log1p(cap/unit)`` below.

"""

from __future__ import annotations

from rlroute.features.extract import FeatureExtractor, default_extractor, extract
from rlroute.features.schema import Feature, FeatureSchema
from rlroute.features.spec import SCHEMA, TEXT_DIMS, build_schema
from rlroute.features.text import complexity

__all__ = [
    "SCHEMA",
    "TEXT_DIMS",
    "Feature",
    "FeatureExtractor",
    "FeatureSchema",
    "build_schema",
    "complexity",
    "default_extractor",
    "extract",
]

__doc__ = (__doc__ or "") + SCHEMA.table() + "\n"
