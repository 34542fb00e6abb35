"""The 224-dim feature schema: names, order, transforms and bounds of every observation index.

Every feature is one raw number (tokens, requests, seconds, ratios, ...) mapped to about [-1, 1] by a
fixed transform. Two transform kinds exist, both vectorised over the whole block at extraction time:

* ``lin``: ``clip(x * scale, low, high)`` -- ratios, flags, signed hashes (``scale`` is usually 1).
* ``log``: ``clip(log1p(x / unit) / log1p(cap / unit), low, high)`` -- heavy-tailed counts and times;
  ``x = cap`` maps to 1, ``x = unit`` maps to ``log(2) / log1p(cap / unit)``.

The schema's ``hash`` is the sha256 of ``(version, text representation, [(name, kind, unit, cap, scale, low, high)...])`` in
order, so any change of a name, the order or a transform changes it; an exported policy carries it and
the router falls back to its heuristic on a mismatch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from rlroute.types import FloatArray

# 3: the cache block's prefix matches are the router's estimate in training too (router_view, issue 12 item 3)
# 4: one text path (issue 12 item 2): the request block of a workload request is computed from the body a
#    client sends for it (filler for a trace's context + the prompt text: rlroute.workload.client), text dims
#    and cues on its last 4,096 characters, input_tokens counting the whole body
# 5: system.<pool>.reply_tokens (the pool's recent output tokens per completion, an EWMA like its recent e2e)
#    replaces system.<pool>.throughput_per_instance (throughput / healthy instances, both already observed):
#    a token-priced call's price is mostly its reply, which no request shows (LOWO run 4, issue 11)
SCHEMA_VERSION = 5


@dataclass(frozen=True, slots=True)
class Feature:
    """One observation index.

    Attributes:
        name: unique, ``block.subject`` style (``system.large.queued_mean``).
        block: ``request``, ``system`` or ``cache``.
        kind: ``lin`` or ``log`` (see the module docstring).
        unit: ``log`` only: the raw value that counts as one unit (e.g. 0.1 s).
        cap: ``log`` only: the raw value mapped to 1.0.
        scale: ``lin`` only: multiplier before clipping.
        low: lower bound after the transform (the Box low).
        high: upper bound after the transform (the Box high).
        doc: what the raw value is, with its unit.
    """

    name: str
    block: str
    kind: str
    doc: str
    unit: float = 1.0
    cap: float = 1.0
    scale: float = 1.0
    low: float = 0.0
    high: float = 1.0

    def transform_text(self) -> str:
        """The transform as a human-readable formula (used in the docs table)."""
        if self.kind == "log":
            inner = "x" if self.unit == 1.0 else f"x/{self.unit:g}"
            return f"log1p({inner})/log1p({self.cap / self.unit:g})"
        return "x" if self.scale == 1.0 else f"x*{self.scale:g}"

    def apply(self, x: float) -> float:
        """Transform one raw value (scalar reference implementation; extraction is vectorised)."""
        y = np.log1p(x / self.unit) / np.log1p(self.cap / self.unit) if self.kind == "log" else x * self.scale
        return float(min(max(y, self.low), self.high))


def lin(name: str, block: str, doc: str, scale: float = 1.0, low: float = 0.0, high: float = 1.0) -> Feature:
    """A linearly scaled feature (ratios, flags, hashes)."""
    return Feature(name=name, block=block, kind="lin", doc=doc, scale=scale, low=low, high=high)


def log(name: str, block: str, doc: str, cap: float, unit: float = 1.0) -> Feature:
    """A log-scaled non-negative feature: ``unit`` -> ~0.1-0.3, ``cap`` -> 1."""
    if cap <= 0 or unit <= 0:
        raise ValueError(f"feature {name}: cap and unit must be positive, got cap={cap} unit={unit}")
    return Feature(name=name, block=block, kind="log", doc=doc, unit=unit, cap=cap)


class FeatureSchema:
    """An ordered list of :class:`Feature` with the vectorised transform and the Box bounds.

    Attributes:
        features: the features in observation order.
        version: bumped whenever a meaning changes (also bump the env version).
        names: feature names in order.
        low: float32 lower bounds (the observation Box low).
        high: float32 upper bounds.
        text: the text representation of the request block (``hash`` or ``minilm``).
        hash: sha256 hex of (version, text representation, names, order, transforms).
        slices: ``block -> slice`` of the observation.
    """

    def __init__(self, features: list[Feature], version: int, text: str = "hash") -> None:
        names = [f.name for f in features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate feature names in schema: {dupes}")
        self.features = tuple(features)
        self.version = version
        self.text = text
        self.names = tuple(names)
        self.low = np.array([f.low for f in features], dtype=np.float32)
        self.high = np.array([f.high for f in features], dtype=np.float32)
        self.index = {n: i for i, n in enumerate(names)}
        self.slices: dict[str, slice] = {}
        for block in dict.fromkeys(f.block for f in features):
            idx = [i for i, f in enumerate(features) if f.block == block]
            if idx != list(range(idx[0], idx[-1] + 1)):
                raise ValueError(f"block {block!r} is not contiguous in the schema")
            self.slices[block] = slice(idx[0], idx[-1] + 1)
        # Vectorised transform: y = where(is_log, log1p(x * inv_unit) * inv_norm, x * scale), then clip.
        self._is_log = np.array([f.kind == "log" for f in features])
        self._inv_unit = np.array([1.0 / f.unit for f in features], dtype=np.float64)
        self._inv_norm = np.array(
            [1.0 / np.log1p(f.cap / f.unit) if f.kind == "log" else 0.0 for f in features], dtype=np.float64
        )
        self._scale = np.array([f.scale if f.kind == "lin" else 0.0 for f in features], dtype=np.float64)
        self.hash = self._digest()

    def __len__(self) -> int:
        return len(self.features)

    def _digest(self) -> str:
        rows = [[f.name, f.kind, f.unit, f.cap, f.scale, f.low, f.high] for f in self.features]
        blob = json.dumps(
            {"version": self.version, "text": self.text, "features": rows},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def transformer(self, *blocks: str) -> BlockTransform:
        """A vectorised transform (raw float64 -> float32 features) over consecutive ``blocks``."""
        first, last = self.slices[blocks[0]], self.slices[blocks[-1]]
        s = slice(first.start, last.stop)
        if s.stop - s.start != sum(self.slices[b].stop - self.slices[b].start for b in blocks):
            raise ValueError(f"blocks {blocks} are not consecutive in the schema")
        return BlockTransform(
            self._is_log[s], self._inv_unit[s], self._inv_norm[s], self._scale[s], self.low[s], self.high[s]
        )

    def table(self) -> str:
        """Markdown table ``index | feature | transform | min | max | description`` of the whole schema.

        Consecutive features that differ only by their index suffix (the text dims) share one row.
        """
        lines = [
            "| index | feature | transform | min | max | description |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        i = 0
        while i < len(self.features):
            f = self.features[i]
            j = i
            while j + 1 < len(self.features) and self.features[j + 1].doc == f.doc:
                j += 1
            idx, name = (
                (f"{i}", f"`{f.name}`")
                if i == j
                else (f"{i}-{j}", f"`{f.name}` ... `{self.features[j].name}`")
            )
            lines.append(f"| {idx} | {name} | `{f.transform_text()}` | {f.low:g} | {f.high:g} | {f.doc} |")
            i = j + 1
        return "\n".join(lines)

    def describe(self) -> dict[str, object]:
        """Version, hash and size, e.g. for an export manifest."""
        return {
            "version": self.version,
            "hash": self.hash,
            "text": self.text,
            "size": len(self),
            "names": list(self.names),
        }


class BlockTransform:
    """The vectorised transform of a run of features; holds no scratch state, so it is thread-safe.

    ``y = x * mul``; ``y = log1p(y)`` where the feature is ``log``; ``y *= post``; then a NaN-safe clip
    (``fmax``/``fmin`` map NaN to the lower bound) so the result is always finite and inside the bounds.
    """

    def __init__(
        self,
        is_log: np.ndarray,
        inv_unit: np.ndarray,
        inv_norm: np.ndarray,
        scale: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
    ) -> None:
        self.is_log = is_log.copy()
        # Gather/scatter by index: ~0.7 us on a 96-feature block where log1p(where=mask) costs ~1.7 us.
        self.log_idx = np.flatnonzero(is_log)
        self.mul = np.where(is_log, inv_unit, scale)
        self.post = np.where(is_log, inv_norm, 1.0)
        self.post_log = self.post[self.log_idx]
        self.low = low.astype(np.float64)
        self.high = high.astype(np.float64)
        self.size = len(is_log)

    def column(self, j: int, xs: np.ndarray) -> FloatArray:
        """The transform of feature ``j`` (of this run) at each raw value ``xs`` (float64): the ufuncs of
        :meth:`__call__` in the same order, so the values are those it writes for ``raw[j] = x``."""
        y = np.multiply(xs, self.mul[j])
        if self.is_log[j]:
            y = np.log1p(y) * self.post[j]
        np.fmax(y, self.low[j], out=y)
        out = np.empty(y.shape, dtype=np.float32)
        np.fmin(y, self.high[j], out=out, casting="same_kind")
        return out

    def __call__(self, raw: np.ndarray, out: FloatArray) -> None:
        """Write the transformed ``raw`` (float64, block length; overwritten) into ``out`` (float32 view)."""
        np.multiply(raw, self.mul, out=raw)
        # Raw counts/times are >= 0; a misreporting live source (< -unit) gives NaN here, mapped to low below.
        # ``post`` is 1 outside the log features, so it is applied to those alone (same products).
        li = self.log_idx
        raw[li] = np.log1p(raw[li]) * self.post_log
        np.fmax(raw, self.low, out=raw)
        np.fmin(raw, self.high, out=out, casting="same_kind")  # float64 result, rounded into float32
