"""The request block: vectorised signed feature hashing, structural cues and the complexity score.

Pure-Python character n-gram hashing costs ~1 ms per prompt (../shared/DESIGN.md, lesson 3), so the text
is hashed with numpy: token-id unigrams and bigrams (word-like units, already computed for the prefix
cache) or, without token ids, byte 3- and 5-grams of the lower-cased prompt (character n-grams), each
key mixed with the splitmix64 finaliser; bit 31 gives the sign, the high 32 bits (multiply-shift) the
bucket. The histogram is L2-normalised, so every text dim is in [-1, 1] and a prompt's length does not
leak into its text vector (length has its own feature). Everything here
is computed once per request and memoised in ``request.cache``.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from rlroute.features.spec import CATEGORY_BUCKETS, TEXT_DIMS
from rlroute.types import Request
from rlroute.workload.tokens import TOKEN_ARRAY_KEY, TextMemo

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1
# Distinct salts keep token unigrams, token bigrams, byte 3-grams, byte 5-grams and block ids apart.
_SALT = {k: np.uint64(v) for k, v in {"tok1": 1, "tok2": 2, "byte3": 3, "byte5": 5, "block": 7}.items()}

# Cues are substring tests on the lower-cased prompt: str.find/count run in C (~5 us per cue on a 2k-token
# prompt) where an alternation regex costs ~1 ms. They are cues, not parsers: documented as such.
_CODE_CUES = (
    "```", "def ", "class ", "import ", "#include", "function", "console.log", "public static", "return ",
    "=> {", "){", ") {", "};", "();", "</", "select ", "printf(", "print(",
)  # fmt: skip
_MATH_CUES = (
    "\\frac", "\\sqrt", "\\sum", "\\int", "\\cdot", "$", "equation", "integral", "derivative", "solve",
    "theorem", "probability", "matrix", "polynomial", "calculate", "compute", "how many",
)  # fmt: skip
_REASONING_CUES = (
    "explain", "why", "prove", "derive", "step by step", "reason", "justify", "analyz", "analys", "compare",
    "evaluate", "implement", "design", "optimiz", "optimis", "debug", "refactor",
)  # fmt: skip
CUE_WINDOW_CHARS = 4096
_IS_DIGIT = np.zeros(256, dtype=bool)
_IS_DIGIT[ord("0") : ord("9") + 1] = True
_IS_OP = np.zeros(256, dtype=bool)
_IS_OP[np.frombuffer(b"+-*/^=<>", dtype=np.uint8)] = True


# Process-level memo of cues by prompt text (a pure function of it; ~100-300 us per prompt to compute,
# and prompts recur across env resets). Bounded (see TextMemo).
_CUES_MEMO: TextMemo[str, tuple[bool, bool, int, int]] = TextMemo()


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic), in place."""
    h ^= h >> np.uint64(30)
    h *= _C1
    h ^= h >> np.uint64(27)
    h *= _C2
    h ^= h >> np.uint64(31)
    return h


def _signed_hist(keys: np.ndarray, salt: np.uint64) -> np.ndarray:
    """Signed bucket counts of ``keys`` (uint64) over ``TEXT_DIMS`` buckets."""
    h = _mix(keys * _GOLD + salt)
    # Bucket from the high 32 bits by multiply-shift (a modulo on uint64 is ~5x slower); sign from bit 31.
    bucket = (((h >> np.uint64(32)) * np.uint64(TEXT_DIMS)) >> np.uint64(32)).astype(np.intp)
    sign = ((h >> np.uint64(31)) & np.uint64(1)).astype(np.float64) * 2.0 - 1.0
    return np.bincount(bucket, weights=sign, minlength=TEXT_DIMS)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.sqrt(v @ v))
    return v / n if n > 0 else v


def hash_tokens(token_ids: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Signed hash histogram of token-id unigrams and bigrams (unnormalised, float64)."""
    ids = np.asarray(token_ids, dtype=np.uint64)
    v = _signed_hist(ids.copy(), _SALT["tok1"])
    if ids.size > 1:
        v += _signed_hist((ids[:-1] << np.uint64(32)) ^ ids[1:], _SALT["tok2"])
    return v


def hash_bytes(text: str) -> np.ndarray:
    """Signed hash histogram of byte 3- and 5-grams of the lower-cased text (unnormalised, float64)."""
    b = np.frombuffer(text.lower().encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    v = np.zeros(TEXT_DIMS, dtype=np.float64)
    for n, salt in ((3, _SALT["byte3"]), (5, _SALT["byte5"])):
        if b.size < n:
            continue
        key = b[: b.size - n + 1].copy()
        for k in range(1, n):  # pack n bytes into one 40-bit key
            key |= b[k : b.size - n + 1 + k] << np.uint64(8 * k)
        v += _signed_hist(key, salt)
    return v


def hash_blocks(blocks: tuple[int, ...]) -> np.ndarray:
    """Signed hash histogram of KV block ids: the only content signal of timing-only traces."""
    keys = np.array([b & _MASK64 for b in blocks], dtype=np.uint64)
    return _signed_hist(keys, _SALT["block"])


def token_array(request: Request) -> tuple[int, ...] | np.ndarray:
    """``request.token_ids``, as the workload's int32 array when it attached one for exactly this tuple
    (identity check: a request rebuilt with other ids but a copied cache falls back to the tuple)."""
    tagged = request.cache.get(TOKEN_ARRAY_KEY)
    if isinstance(tagged, tuple) and len(tagged) == 2 and tagged[0] is request.token_ids:
        return tagged[1]  # type: ignore[no-any-return]
    return request.token_ids or ()


def hashed_text(request: Request) -> np.ndarray:
    """The ``TEXT_DIMS`` text vector of the hashing representation, L2-normalised (zeros if no content).

    Source, first available: token ids (uni+bigrams; word-piece ids carry sub-word information, so the
    byte n-grams would add cost, not signal), else the prompt's byte 3/5-grams, else the block hashes.
    """
    if request.token_ids:
        return _unit(hash_tokens(token_array(request)))
    if request.prompt:
        return _unit(hash_bytes(request.prompt))
    if request.blocks:
        return _unit(hash_blocks(request.blocks))
    return np.zeros(TEXT_DIMS, dtype=np.float64)


def _has_arithmetic(text: str) -> bool:
    """True if the text holds ``digit op digit`` (spaces ignored), e.g. ``3 + 4`` or ``x^2=9``."""
    # Single-character `in` is a memchr: ruling out texts without any operator or digit costs ~1 us.
    if not any(c in text for c in "+-*/^=<>") or not any(d in text for d in "0123456789"):
        return False
    b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    b = b[b != 32]
    if b.size < 3:
        return False
    digit = _IS_DIGIT[b]
    op = _IS_OP[b]
    return bool(np.any(digit[:-2] & op[1:-1] & digit[2:]))


def cues(request: Request) -> tuple[bool, bool, int, int]:
    """Structural cues ``(has_code, has_math, questions, reasoning_cues)`` of the prompt (memoised).

    ``has_code``: any of ``_CODE_CUES`` in the lower-cased prompt; ``has_math``: any of ``_MATH_CUES`` or
    arithmetic (:func:`_has_arithmetic`); ``questions``: count of ``?``; ``reasoning_cues``: total count
    of ``_REASONING_CUES`` substrings. All 0 without prompt text. Only the last ``CUE_WINDOW_CHARS``
    characters are scanned: that is where a conversation's newest message sits, and it bounds the cost
    of long multi-turn prompts (the text hash still covers the whole prompt).
    """
    hit = request.cache.get("features.cues")
    if hit is not None:
        return hit  # type: ignore[return-value]
    prompt = request.prompt or ""
    out = _CUES_MEMO.get(prompt)
    if out is None:
        text = prompt[-CUE_WINDOW_CHARS:].lower()
        out = (
            any(c in text for c in _CODE_CUES),
            any(c in text for c in _MATH_CUES) or _has_arithmetic(text),
            text.count("?"),
            sum(text.count(c) for c in _REASONING_CUES),
        )
        _CUES_MEMO.put(prompt, out, len(prompt))
    request.cache["features.cues"] = out
    return out


def requested_output(request: Request) -> int:
    """Output tokens the client asked for: ``max_new_tokens`` when set, else the trace's ``output_len``."""
    return request.max_new_tokens if request.max_new_tokens is not None else request.output_len


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``x <= lo``, 1 at ``x >= hi``, logarithmic in between."""
    if x <= lo:
        return 0.0
    return min(1.0, math.log(x / lo) / math.log(hi / lo))


def complexity(request: Request) -> float:
    """The seed's complexity score in [0, 1]; the seed heuristic routes scores > 0.7 to the large pool.

    Deterministic, from the request alone, with ``ramp(x, lo, hi) = clip(log(x/lo) / log(hi/lo), 0, 1)``:

    * with prompt text: ``clip(0.45 L + 0.35 code + 0.35 math + 0.15 min(questions, 3)/3 +
      0.10 min(reasoning_cues, 3)/3, 0, 1)`` with ``L = ramp(input_len, 32, 32768)`` and the 0/1
      code/math cues of :func:`cues`;
    * without text (timing-only traces): ``ramp(input_len, 128, 131072)`` (> 0.7 above ~16k tokens),
      since length is all that is known.

    The requested output length is left out: workloads report a client cap (``max_new_tokens``), which
    says little about difficulty. The weights are hand-set, not fitted to any quality label: a code or
    maths prompt of a few hundred tokens with a couple of questions scores ~0.6, code *and* maths or a
    long multi-question one passes 0.7 (about the hardest 7 % of the built-in synthetic prompts), a
    short factual question scores ~0.1.
    """
    hit = request.cache.get("features.complexity")
    if hit is not None:
        return hit  # type: ignore[return-value]
    if request.prompt:
        code, math_, q, r = cues(request)
        length = _ramp(float(request.input_len), 32.0, 32768.0)
        score = 0.45 * length + 0.35 * code + 0.35 * math_ + 0.15 * min(q, 3) / 3 + 0.10 * min(r, 3) / 3
    else:
        score = _ramp(float(request.input_len), 128.0, 131072.0)
    score = min(1.0, max(0.0, score))
    request.cache["features.complexity"] = score
    return score


def category_bucket(category: str) -> int:
    """Stable bucket of a category name (crc32, independent of PYTHONHASHSEED)."""
    return zlib.crc32(category.encode("utf-8")) % CATEGORY_BUCKETS


def request_scalars(request: Request) -> list[float]:
    """The 16 raw non-text request features, in schema order (see rlroute.features.spec)."""
    code, math_, q, r = cues(request)
    cat = [0.0] * CATEGORY_BUCKETS
    if request.category:
        cat[category_bucket(request.category)] = 1.0
    return [
        float(request.input_len),
        float(requested_output(request)),
        float(request.turn),
        1.0 if request.session_id is not None else 0.0,
        float(code),
        float(math_),
        float(q),
        float(r),
        1.0 if (request.prompt or request.token_ids) else 0.0,
        complexity(request),
        1.0 if request.category else 0.0,
        *cat,
    ]
