"""Hashed n-gram features of a request for the RouteLLM-style threshold router.

Signed feature hashing (Weinberger et al., 2009) of lower-cased word unigrams and bigrams and of
word-bounded character 3-grams of the prompt, plus the category and a few numeric cues (log prompt
length, log requested output, conversation turn). This is the text representation that DESIGN.md's
"What the data allow" measured (APGR 0.64 in-domain on the RouteLLM MMLU labels). Hashes are CRC32 of
UTF-8 bytes, not Python's ``hash`` (salted per process), so a trained model file is valid across runs.
Trace workloads without prompt text still get the numeric cues.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from rlroute.types import Request

FEATURE_VERSION = 2
_WORD = re.compile(r"\w+", re.UNICODE)
N_NUMERIC = 4  # bias, log input tokens, log requested output tokens, turn
# Only the prompt's tail is hashed: multi-turn prompts carry the whole conversation with the newest user
# message last, and hashing 30k-token contexts would cost ~10 ms per request for little signal.
MAX_CHARS = 2000


def _tokens(request: Request) -> list[str]:
    out: list[str] = []
    if request.category:
        out.append(f"cat={request.category}")
    if not request.prompt:
        return out
    words = _WORD.findall(request.prompt[-MAX_CHARS:].lower())
    out.extend(f"w={w}" for w in words)
    out.extend(f"b={a}_{b}" for a, b in zip(words, words[1:], strict=False))
    for w in words:
        padded = f"<{w}>"
        out.extend(f"c={padded[i:i + 3]}" for i in range(len(padded) - 2))
    return out


def _numeric(request: Request) -> list[float]:
    # Scaled to about [0, 1]: log1p of up to ~100k tokens is about 11.5.
    requested = request.max_new_tokens if request.max_new_tokens is not None else request.output_len
    return [1.0, math.log1p(max(request.input_len, 0)) / 12.0, math.log1p(max(requested, 0)) / 12.0,
            min(request.turn, 20) / 20.0]


def featurize(requests: Sequence[Request], n_hash: int = 2**14) -> sp.csr_matrix:
    """Sparse ``(len(requests), n_hash + N_NUMERIC)`` matrix; hashed counts are L2-normalised per row.

    Args:
        requests: the requests to featurise.
        n_hash: hashed-feature dimension (a power of two keeps the modulo cheap and uniform).
    """
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, req in enumerate(requests):
        counts: dict[int, float] = {}
        for tok in _tokens(req):
            h = zlib.crc32(tok.encode("utf-8"))
            col = h % n_hash
            sign = 1.0 if (h >> 31) & 1 else -1.0
            counts[col] = counts.get(col, 0.0) + sign
        norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
        for col, v in counts.items():
            if v != 0.0:
                rows.append(r)
                cols.append(col)
                vals.append(v / norm)
        for k, v in enumerate(_numeric(req)):
            rows.append(r)
            cols.append(n_hash + k)
            vals.append(v)
    return sp.csr_matrix(
        (np.asarray(vals, dtype=np.float64), (np.asarray(rows), np.asarray(cols))),
        shape=(len(requests), n_hash + N_NUMERIC),
    )


def cached_row(request: Request, n_hash: int) -> sp.csr_matrix:
    """Features of one request, memoised in ``request.cache`` (a request is scored once per decision)."""
    key = f"textfeat.v{FEATURE_VERSION}.{n_hash}"
    row = request.cache.get(key)
    if row is None:
        row = featurize([request], n_hash)
        request.cache[key] = row
    assert isinstance(row, sp.csr_matrix)
    return row
