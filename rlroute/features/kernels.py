"""Compiled kernels of the request block (numba): the whole cold block of a text request in one call.

These are the only implementation the env and the router run; the Python formulations they replaced are
the reference ``tests/test_features_fastpath.py`` compares them with, bit for bit, on synthetic, MMLU and
adversarial texts (used only by that test).

* :func:`byte_ngram_counts`: the signed hash histogram of byte 3- and 5-grams
  (:func:`rlroute.features.text.hash_utf8`): key = the n-gram's bytes packed little-endian, ``key * GOLD +
  salt`` (salt 3 or 5), the splitmix64 finaliser, bucket = the high 32 bits multiply-shifted onto ``dims``,
  sign = bit 31. Integer counts, so the result is exact. The keys are mixed in one loop (which the
  compiler vectorises) and counted in a second.
* :func:`scan_cues`: the structural cues of :func:`rlroute.features.text.cues` in one pass over the
  lower-cased UTF-8 bytes (tables from :class:`rlroute.features.text.CueTables`).
* :func:`complexity_score`: the seed's complexity score (:func:`rlroute.features.text.complexity`).
* :func:`finish_block` / :func:`text_block`: the 16 request scalars and the schema's transform of the
  whole block into float32 (:class:`rlroute.features.schema.BlockTransform`, with the ``log`` features of
  counts read from tables the transform itself computed: :class:`rlroute.features.extract.RequestTables`).

Measured (``experiments/benchmarks/README.md``, "Decision path compiled"): the cold request block of the
bench's 2,200-character prompt 87-91 -> 27-28 us CPU p50 (load 9, alternating runs).

Compiled on import (``cache=True``: from the on-disk cache after a process's first compile, ~2-4 s), so no
request pays for it; this module is imported the first time a text is hashed or a router starts. Every
table is an argument, never a global: numba freezes globals into its on-disk cache, which would not notice
a change of the cue lists or the schema in another module.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_SALT3, _SALT5 = np.uint64(3), np.uint64(5)
_SPACE = 32
# Layout of the uint8 cue table (CueTables.tab8): byte class (1 digit, 2 operator), then the 65,536 hash
# slots (1: a cue of >= 4 bytes is listed there), then per byte flags (1: a shorter cue starts with it,
# 2: an operator, 4: "?"), then the cues' bytes.
_CLASS, _SLOT, _FLAG, _BYTES = 0, 256, 256 + 65536, 256 + 65536 + 256
_DIGIT = 1
_ARGS = 4  # CueTables.index starts with (hash multiplier, code cues, maths cues, all cues)


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(key: np.uint64, salt: np.uint64) -> np.uint64:
    h = key * _GOLD + salt
    h ^= h >> np.uint64(30)
    h *= _C1
    h ^= h >> np.uint64(27)
    h *= _C2
    h ^= h >> np.uint64(31)
    return h


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(key: np.uint64, salt: np.uint64, dims: np.uint64) -> np.int32:
    """``2 * bucket + sign bit`` of an n-gram key."""
    h = _mix(key, salt)
    return np.int32(((((h >> np.uint64(32)) * dims) >> np.uint64(32)) << np.uint64(1)) | ((h >> np.uint64(31)) & np.uint64(1)))


@numba.njit(cache=True, nogil=True)
def byte_ngram_counts(data: np.ndarray, dims: int) -> np.ndarray:
    """Signed hash histogram (float64, ``dims``) of the byte 3- and 5-grams of ``data`` (uint8; lower-cased
    UTF-8); zeros when it holds fewer than 3 bytes."""
    n = data.size
    m3, m5 = max(n - 2, 0), max(n - 4, 0)
    d = np.uint64(dims)
    slots = np.empty(m3 + m5, np.int32)
    for i in range(m3):
        key = np.uint64(data[i]) | (np.uint64(data[i + 1]) << np.uint64(8)) | (np.uint64(data[i + 2]) << np.uint64(16))
        slots[i] = _slot(key, _SALT3, d)
    for i in range(m5):
        key = np.uint64(data[i]) | (np.uint64(data[i + 1]) << np.uint64(8)) | (np.uint64(data[i + 2]) << np.uint64(16))
        key |= (np.uint64(data[i + 3]) << np.uint64(24)) | (np.uint64(data[i + 4]) << np.uint64(32))
        slots[m3 + i] = _slot(key, _SALT5, d)
    counts = np.zeros(2 * dims, np.int32)
    for j in range(slots.size):
        counts[slots[j]] += 1
    out = np.empty(dims, np.float64)
    for b in range(dims):
        out[b] = float(counts[2 * b + 1] - counts[2 * b])
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _take(data: np.ndarray, i: int, k: int, ends: np.ndarray, counts: np.ndarray, index: np.ndarray,
          tab8: np.ndarray) -> None:
    """Count cue ``k`` at offset ``i`` if it starts there and does not overlap its previous match."""
    start, stop = index[_ARGS + k], index[_ARGS + k + 1]
    if i < ends[k] or i + stop - start > data.size:
        return
    for j in range(stop - start):
        if data[i + j] != tab8[_BYTES + start + j]:
            return
    counts[k] += 1
    ends[k] = i + stop - start


@numba.njit(cache=True, nogil=True)
def scan_cues(data: np.ndarray, index: np.ndarray, tab8: np.ndarray) -> tuple[bool, bool, int, int]:
    """``(has_code, has_math, questions, reasoning_cues)`` of lower-cased UTF-8 ``data`` (one pass).

    Tables from :class:`rlroute.features.text.CueTables`: ``index`` (int64) = (hash multiplier, code cues,
    maths cues, all cues), the cues' offsets in ``tab8``'s cue bytes, each cue's first (up to) 4 bytes
    packed little-endian and their mask, the 65,536 + 1 offsets of the hash-slot lists (cues of >= 4
    bytes, under a 16-bit multiplicative hash of their first 4 bytes), the 256 + 1 offsets of the
    first-byte lists (shorter cues), then both lists' cue indices; ``tab8`` (uint8): see ``_CLASS`` ...
    ``_BYTES``. Counts are non-overlapping per cue, as ``bytes.count``: a match is taken left to right and
    the next one of the same cue starts after it. Arithmetic is ``digit op digit`` once the spaces are
    dropped: the non-space bytes either side of an operator are digits.
    """
    mul, n_code, n_math, n_cues = np.uint64(index[0]), index[1], index[2], index[3]
    packed = _ARGS + n_cues + 1
    masks = packed + n_cues
    slots = masks + n_cues
    firsts = slots + 65537
    counts = np.zeros(n_cues, np.int64)
    ends = np.zeros(n_cues, np.int64)
    n = data.size
    questions = 0
    arithmetic = False
    word = np.uint64(0)  # the 4 bytes at i, little-endian, rolled one byte per step
    for j in range(min(3, n)):
        word |= np.uint64(data[j]) << np.uint64(8 * (j + 1))
    for i in range(n):
        b = data[i]
        full = i + 3 < n
        if full:
            word = (word >> np.uint64(8)) | (np.uint64(data[i + 3]) << np.uint64(24))
            slot = ((word * mul) & np.uint64(0xFFFFFFFF)) >> np.uint64(16)
            if tab8[_SLOT + slot]:
                s = slots + np.int64(slot)
                for p in range(index[s], index[s + 1]):
                    _take(data, i, index[p], ends, counts, index, tab8)
        f = tab8[_FLAG + b]
        if f == 0:
            continue
        if f & 1:  # a shorter cue starts with this byte: compare the packed word (the byte loop near the end)
            w = np.int64(word)
            for p in range(index[firsts + b], index[firsts + b + 1]):
                k = index[p]
                if not full:
                    _take(data, i, k, ends, counts, index, tab8)
                elif (w & index[masks + k]) == index[packed + k] and i >= ends[k]:
                    counts[k] += 1
                    ends[k] = i + index[_ARGS + k + 1] - index[_ARGS + k]
        if f & 2 and not arithmetic:  # an operator
            before, after = i - 1, i + 1
            while before >= 0 and data[before] == _SPACE:
                before -= 1
            while after < n and data[after] == _SPACE:
                after += 1
            arithmetic = (before >= 0 and after < n and tab8[_CLASS + data[before]] == _DIGIT
                          and tab8[_CLASS + data[after]] == _DIGIT)
        if f & 4:
            questions += 1
    code = False
    for k in range(n_code):
        code = code or counts[k] > 0
    math_ = arithmetic
    for k in range(n_code, n_code + n_math):
        math_ = math_ or counts[k] > 0
    reasoning = 0
    for k in range(n_code + n_math, n_cues):
        reasoning += counts[k]
    return code, math_, questions, reasoning


@numba.njit(cache=True, nogil=True)
def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``x <= lo``, 1 at ``x >= hi``, logarithmic in between."""
    if x <= lo:
        return 0.0
    return min(1.0, math.log(x / lo) / math.log(hi / lo))


@numba.njit(cache=True, nogil=True)
def complexity_score(has_text: bool, code: bool, math_: bool, questions: int, reasoning: int, tokens: int) -> float:
    """The seed's complexity score in [0, 1] (the formula is documented at
    :func:`rlroute.features.text.complexity`), evaluated left to right as written there."""
    if has_text:
        length = _ramp(float(tokens), 32.0, 32768.0)
        score = 0.45 * length + 0.35 * (1.0 if code else 0.0) + 0.35 * (1.0 if math_ else 0.0)
        score = score + 0.15 * min(questions, 3) / 3 + 0.10 * min(reasoning, 3) / 3
    else:
        score = _ramp(float(tokens), 128.0, 131072.0)
    return min(1.0, max(0.0, score))


@numba.njit(cache=True, nogil=True)
def finish_block(raw: np.ndarray, lin: np.ndarray, tables: np.ndarray, out: np.ndarray) -> bool:
    """``out`` (float32) = the schema's transform of ``raw`` (float64, the block's raw values).

    ``lin`` rows per feature: multiplier, lower and upper bound (``BlockTransform.mul``, ``low``, ``high``),
    then a table's offset in ``tables`` and its length (0: no table). A feature without a table is ``clip(x *
    mul)``, NaN mapped to the lower bound (NumPy's ``fmax``/``fmin``). A ``log`` feature is ``tables[offset
    + x]`` for an integer ``0 <= x < length``, its upper bound above (the table's last entry is the bound and
    log1p is increasing). Returns False, leaving ``out`` to the caller, if a ``log`` input is outside its
    table (negative, fractional, NaN).
    """
    for j in range(raw.size):
        x = raw[j]
        size = lin[4, j]
        if size > 0:
            if x >= size:
                out[j] = np.float32(lin[2, j])
            elif x >= 0.0 and x == math.floor(x):
                out[j] = tables[int(lin[3, j]) + int(x)]
            else:
                return False
        else:
            y = x * lin[0, j]
            y = y if y >= lin[1, j] else lin[1, j]
            y = y if y <= lin[2, j] else lin[2, j]
            out[j] = np.float32(y)
    return True


@numba.njit(cache=True, nogil=True)
def text_block(data: np.ndarray, index: np.ndarray, tab8: np.ndarray, lin: np.ndarray, tables: np.ndarray,
               out: np.ndarray, tokens: int, cap: int, turn: int, in_session: bool) -> tuple[bool, bool, int, int, float, bool]:
    """The whole request block (float32, into ``out``) of a request with text, from its window's
    lower-cased UTF-8 ``data`` and the scalars that do not depend on the text (input tokens, output cap,
    turn, in-session flag, as :func:`rlroute.features.text.request_scalars` orders them): the
    L2-normalised byte n-gram histogram, then the scalars with the cues, the has-text flag, the complexity
    score and the reserved zeros, transformed by :func:`finish_block`. Returns the cues, the score and
    :func:`finish_block`'s flag (False: ``out`` is not written; the caller transforms the raw values).
    """
    dims = out.size - 16  # the request block's 16 scalars follow its text dims (rlroute.features.spec)
    raw = np.zeros(out.size, np.float64)
    v = byte_ngram_counts(data, dims)
    norm2 = 0.0
    for k in range(dims):
        norm2 += v[k] * v[k]  # integer counts: exact in any order, as NumPy's dot
    norm = math.sqrt(norm2)
    for k in range(dims):
        raw[k] = v[k] / norm if norm > 0 else v[k]
    code, math_, q, r = scan_cues(data, index, tab8)
    score = complexity_score(True, code, math_, q, r, tokens)
    s = raw[dims:]
    s[0], s[1], s[2], s[3] = float(tokens), float(cap), float(turn), 1.0 if in_session else 0.0
    s[4], s[5], s[6], s[7] = 1.0 if code else 0.0, 1.0 if math_ else 0.0, float(q), float(r)
    s[8], s[9] = 1.0, score  # has text; complexity; then the reserved zeros
    ok = finish_block(raw, lin, tables, out)
    return code, math_, q, r, score, ok


def _compile() -> None:
    """Compile (or load from the on-disk cache) every kernel for the argument types the features pass."""
    data = np.frombuffer(b"warm up 1+2?", dtype=np.uint8)  # read-only, as the features' bytes
    index = np.zeros(_ARGS + 1 + 65537 + 257, np.int64)  # no cues
    index[0] = 1
    tab8, lin = np.zeros(_BYTES, np.uint8), np.zeros((5, 128))
    tables, out = np.zeros(1, np.float32), np.zeros(128, np.float32)
    byte_ngram_counts(data, 8)
    scan_cues(data, index, tab8)
    complexity_score(True, False, False, 1, 1, 1)
    finish_block(np.zeros(128), lin, tables, out)
    text_block(data, index, tab8, lin, tables, out, 1, 1, 0, False)


_compile()  # now, not on a request
