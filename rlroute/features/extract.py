"""``extract(request, state, matches)``: the 224-dim observation, same code for simulator and live pools.

The request block depends on the request alone and is memoised in ``request.cache`` under a key naming
the text representation, so a request seen twice (env step, then evaluator or router) pays once. With the
``hash`` text representation and text to read (every workload request, every router request with a body
text), the cold block is one compiled call (:func:`rlroute.features.kernels.text_block`: hashing, cues,
complexity, scalars and the schema's transform) — the env and the router run this same path;
``tests/test_features_fastpath.py`` holds the Python formulation it replaced as its reference and checks
them bit for bit. The system and cache blocks are recomputed per decision from the typed state
(:func:`rlroute.features.state.state_features`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from rlroute.cluster.base import ClusterState
from rlroute.features.encoders import TextEncoder, make_text_encoder
from rlroute.features.schema import BlockTransform, FeatureSchema
from rlroute.features.spec import TEXT_DIMS, build_schema
from rlroute.features.state import state_features
from rlroute.features.text import (
    CUE_TABLES,
    client_window,
    in_session,
    lower_utf8,
    prompt_tokens,
    request_scalars,
    requested_output,
)
from rlroute.types import FloatArray, Request
from rlroute.workload.client import filler_tokens
from rlroute.workload.tokens import TextMemo

# Process-level memo of request blocks by request content (per schema key), shared by every extractor
# of the process: each env reset materialises new Request objects for prompts seen before, and the
# block (text hashing of ~2k token ids, cues, complexity: ~200-500 us) is a pure function of the fields
# in :func:`content_key`. Read-only arrays, so sharing them is safe. Bounded (see TextMemo).
_BLOCK_MEMO: dict[str, TextMemo[tuple[object, ...], FloatArray]] = {}


def content_key(request: Request) -> tuple[object, ...]:
    """Everything the request block depends on (what the client sends: :mod:`rlroute.workload.client`),
    as a hashable key.

    Token ids matter only without prompt text and enter as ``(len, hash)`` (not the tuple itself, which
    would keep ~2k ints alive per entry); two different id sequences would also need equal length and
    equal 64-bit hash to collide. The filler is a function of the blocks, the block size, its length and,
    past the blocks, the request id.
    """
    ids = request.token_ids if request.prompt is None else None
    fill = filler_tokens(request)
    uncovered = len(request.blocks) * request.block_size < fill
    return (
        request.prompt,
        (len(ids), hash(ids)) if ids else None,
        (fill, request.blocks, request.block_size, request.id if uncovered else None) if fill else None,
        requested_output(request),
        request.turn,
        request.session_id is not None,
    )


@functools.cache
def _kernels() -> tuple[Any, Any]:
    """The request block's compiled kernels (numba: imported, and compiled or loaded, on first use; a cached
    getter rather than an import statement per request, which costs ~0.7 us)."""
    from rlroute.features.kernels import finish_block, text_block

    return finish_block, text_block


class RequestTables:
    """What :func:`rlroute.features.kernels.finish_block` needs of the request block's transform ``tf``.

    ``lin``: rows multiplier, lower and upper bound per feature, then its table's offset in ``tables`` and
    length. Every ``log`` feature of the request block has counts for raw values (tokens, turn, questions,
    cues) and gets a table of its transformed value at ``0, 1, ..., ceil(cap) + 1``, computed by ``tf``
    itself (:meth:`BlockTransform.column`), so an entry is bit for bit what the vectorised transform gives
    (NumPy's ``log1p`` may differ from the C library's in the last bit; a table needs neither); its last
    entry must be the upper bound.
    """

    def __init__(self, tf: BlockTransform, schema: FeatureSchema, block: slice) -> None:
        feats = schema.features[block]
        self.lin = np.zeros((5, len(feats)), dtype=np.float64)
        self.lin[:3] = tf.mul, tf.low, tf.high
        parts: list[np.ndarray] = []
        offset = 0
        for j, f in enumerate(feats):
            if f.kind != "log":
                continue
            col = tf.column(j, np.arange(math.ceil(f.cap) + 2, dtype=np.float64))
            if col[-1] != np.float32(f.high):
                raise ValueError(f"feature {f.name}: transform at cap + 1 is {col[-1]}, expected its bound {f.high}")
            self.lin[3:, j] = offset, len(col)
            parts.append(col)
            offset += len(col)
        self.tables = np.concatenate(parts) if parts else np.zeros(1, dtype=np.float32)


class FeatureExtractor:
    """Computes observations for one schema (one text representation); stateless per call, thread-safe.

    Args:
        text: name of the text representation (``hash`` or ``minilm``, see
            :mod:`rlroute.features.encoders`); it is part of the schema hash.
    """

    def __init__(self, text: str = "hash") -> None:
        self.text = text
        self.encoder: TextEncoder = make_text_encoder(text)
        self.schema: FeatureSchema = build_schema(text)
        self._req_slice = self.schema.slices["request"]
        self._req_tf = self.schema.transformer("request")
        self._tables = RequestTables(self._req_tf, self.schema, self._req_slice)
        self._state_slice = slice(self.schema.slices["system"].start, self.schema.slices["cache"].stop)
        self._state_tf = self.schema.transformer("system", "cache")
        self._key = f"features.request.v{self.schema.version}.{text}"
        self._size = len(self.schema)

    def request_block(self, request: Request) -> FloatArray:
        """The 128 request features (memoised in ``request.cache``); do not modify the result."""
        hit = request.cache.get(self._key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        key = content_key(request)
        memo = _BLOCK_MEMO.get(self._key)
        if memo is None:
            memo = _BLOCK_MEMO[self._key] = TextMemo()
        block = memo.get(key)
        if block is None:
            block = self._cold_block(request)
            block.flags.writeable = False
            memo.put(key, block, len(request.prompt or ""))
        request.cache[self._key] = block
        return block

    def _cold_block(self, request: Request) -> FloatArray:
        finish_block, text_block = _kernels()
        t, c = self._tables, CUE_TABLES
        block = np.empty(self._req_slice.stop - self._req_slice.start, dtype=np.float32)
        window = client_window(request) if self.text == "hash" else ""
        if window:  # the served path: one compiled call
            data = np.frombuffer(lower_utf8(window), dtype=np.uint8)
            code, math_, q, r, score, ok = text_block(data, c.index, c.tab8, t.lin, t.tables, block,
                                                      prompt_tokens(request), requested_output(request),
                                                      request.turn, in_session(request))
            request.cache["features.cues"] = (code, math_, q, r)
            request.cache["features.complexity"] = score
            if ok:
                return block
        raw = np.empty(block.size, dtype=np.float64)
        raw[:TEXT_DIMS] = self.encoder(request)
        raw[TEXT_DIMS:] = request_scalars(request)
        if not finish_block(raw, t.lin, t.tables, block):
            # a count outside its table (negative or fractional: no client sends one): the transform itself
            self._req_tf(raw, block)
        return block

    def extract(self, request: Request, state: ClusterState, matches: dict[str, list[int]]) -> FloatArray:
        """The observation for routing ``request`` now.

        Args:
            request: the request to route.
            state: the cluster snapshot at decision time.
            matches: ``cluster.prefix_match(request)``: matched prompt tokens per instance, per pool.

        Returns:
            A new float32 array of shape ``(224,)`` inside ``[schema.low, schema.high]``.
        """
        out = np.empty(self._size, dtype=np.float32)
        out[self._req_slice] = self.request_block(request)
        # Match ratios over the prompt length as the router counts it (the request block's input_tokens).
        state_features(state, matches, prompt_tokens(request), self._state_tf, out[self._state_slice])
        return out


_DEFAULT: FeatureExtractor | None = None


def default_extractor() -> FeatureExtractor:
    """The process-wide ``hash`` extractor behind :func:`extract` (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = FeatureExtractor("hash")
    return _DEFAULT


def extract(request: Request, state: ClusterState, matches: dict[str, list[int]]) -> FloatArray:
    """The 224-dim observation with the default (hashing) text representation; see :class:`FeatureExtractor`."""
    return default_extractor().extract(request, state, matches)
