"""The request block: vectorised signed feature hashing, structural cues and the complexity score.

One text path (schema v4): every request feature is computed from what a client sends, identically in
training and serving. For a workload request that is the text of :func:`rlroute.workload.client.client_text`
(filler standing for a trace's context, then the prompt text); for a router request, the body's text (or
its ``input_ids``). The text dims and the cues read the text's **last** ``TEXT_WINDOW_CHARS`` characters
(:func:`client_window`; where a conversation's newest message sits), so neither side pays for a long
context: the env builds that tail without the filler before it, the router slices the body; the length
feature counts the whole text (:func:`rlroute.workload.client.client_tokens`, by arithmetic for filler).

Pure-Python character n-gram hashing costs ~1 ms per prompt (../shared/DESIGN.md, lesson 3), so the text
is hashed in compiled code (numba; NumPy for ids): byte 3- and 5-grams of the lower-cased window
(character n-grams), or, for a client that sends ``input_ids`` only, unigrams and bigrams of its last
``TEXT_WINDOW_CHARS / 4`` ids; each
key mixed with the splitmix64 finaliser; bit 31 gives the sign, the high 32 bits (multiply-shift) the
bucket. The histogram is L2-normalised, so every text dim is in [-1, 1] and a prompt's length does not
leak into its text vector (length has its own feature). Everything here
is computed once per request and memoised in ``request.cache``.

The serving router sees every prompt for the first time, so this cold path is on its decision latency:
the whole block of a request with text — hashing, cues, complexity, scalars and the schema's transform —
is one compiled call (:func:`rlroute.features.kernels.text_block`, called by
:class:`rlroute.features.extract.FeatureExtractor`), and the functions here that the heuristic and the
ids-only path call (:func:`scan_cues`, :func:`complexity`, :func:`hash_utf8`) run the same kernels: one
implementation. ``tests/test_features_fastpath.py`` holds the Python formulation as its reference and
checks the outputs bit for bit.
"""

from __future__ import annotations

import numpy as np

from rlroute.features.spec import RESERVED_DIMS, TEXT_DIMS
from rlroute.types import Request
from rlroute.worker.tokens import BYTES_PER_TOKEN
from rlroute.workload.client import client_tail, client_tokens, filler_tokens
from rlroute.workload.tokens import TOKEN_ARRAY_KEY, TextMemo

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
# Distinct salts keep token unigrams, token bigrams, byte 3-grams and byte 5-grams apart.
_SALT = {k: np.uint64(v) for k, v in {"tok1": 1, "tok2": 2, "byte3": 3, "byte5": 5}.items()}
_ONE, _S31, _S32 = np.uint64(1), np.uint64(31), np.uint64(32)
_DIMS = np.uint64(TEXT_DIMS)

# Cues are substring tests on the lower-cased prompt (defined as str `in`/`count`; computed by
# scan_cues in one pass, where an alternation regex costs ~1 ms). They are cues, not parsers.
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
TEXT_WINDOW_CHARS = 4096  # the text dims and cues read the last this many characters of the client's text
_OPERATORS = b"+-*/^=<>"  # the arithmetic cue: digit, operator, digit once spaces are dropped
# Any odd multiplier is correct (a flagged offset is confirmed byte by byte); this one was picked among
# 3,000 random ones for the fewest false candidates on the synthetic and MMLU prompts (42 vs 3,092 for the
# golden-ratio constant over 1.6 M offsets: common 4-grams such as "e re" no longer share a slot with a cue).
_HASH_MUL = 0xBCA3AA73


class CueTables:
    """The cue lists as the tables :func:`rlroute.features.kernels.scan_cues` reads (built once).

    Cues of >= 4 bytes are listed under a 16-bit multiplicative hash of their first 4 bytes (one multiply
    and shift per offset of the text; the few offsets whose slot lists a cue are confirmed byte by byte),
    shorter ones under their first byte. All cues are ASCII, so a match in the lower-cased UTF-8 bytes is a
    match in the lower-cased text, at the same rank (counts are identical). Layout: the kernel's docstring.
    """

    def __init__(self) -> None:
        cues = [c.encode() for c in (*_CODE_CUES, *_MATH_CUES, *_REASONING_CUES)]
        slots: list[list[int]] = [[] for _ in range(1 << 16)]
        firsts: list[list[int]] = [[] for _ in range(256)]
        for k, c in enumerate(cues):
            if len(c) >= 4:
                slots[((int.from_bytes(c[:4], "little") * _HASH_MUL) & 0xFFFFFFFF) >> 16].append(k)
            else:
                firsts[c[0]].append(k)
        args = [_HASH_MUL, len(_CODE_CUES), len(_MATH_CUES), len(cues)]
        offsets = np.cumsum([0] + [len(c) for c in cues])
        packed = [int.from_bytes(c[:4], "little") for c in cues]
        masks = [(1 << (8 * min(len(c), 4))) - 1 for c in cues]
        head = len(args) + 3 * len(cues) + 1 + len(slots) + 1 + len(firsts) + 1  # where the lists' items start
        starts = head + np.cumsum([0] + [len(x) for x in slots + firsts])
        slot_starts, first_starts = starts[: len(slots) + 1], starts[len(slots) :]
        items = [k for x in slots + firsts for k in x]
        self.index = np.concatenate([args, offsets, packed, masks, slot_starts, first_starts, items]).astype(np.int64)
        classes = np.zeros(256, dtype=np.uint8)
        classes[48:58] = 1
        classes[list(_OPERATORS)] = 2
        flags = np.array([bool(x) for x in firsts], dtype=np.uint8)
        flags[list(_OPERATORS)] |= 2
        flags[ord("?")] |= 4
        slot_flags = np.array([bool(x) for x in slots], dtype=np.uint8)
        self.tab8 = np.concatenate([classes, slot_flags, flags, np.frombuffer(b"".join(cues), dtype=np.uint8)])


CUE_TABLES = CueTables()


def scan_cues(data: bytes) -> tuple[bool, bool, int, int]:
    """Cues ``(has_code, has_math, questions, reasoning_cues)`` of lower-cased UTF-8 text (see :func:`cues`),
    in one compiled pass (:func:`rlroute.features.kernels.scan_cues`)."""
    from rlroute.features.kernels import scan_cues as kernel

    return kernel(np.frombuffer(data, dtype=np.uint8), CUE_TABLES.index, CUE_TABLES.tab8)  # type: ignore[no-any-return]


# Process-level memo of cues by window text (a pure function of it; prompts recur across env resets).
# Bounded (see TextMemo).
_CUES_MEMO: TextMemo[str, tuple[bool, bool, int, int]] = TextMemo()


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic), in place."""
    h ^= h >> np.uint64(30)
    h *= _C1
    h ^= h >> np.uint64(27)
    h *= _C2
    h ^= h >> np.uint64(31)
    return h


def _keys(keys: np.ndarray, salt: np.uint64) -> np.ndarray:
    """``keys * GOLD + salt`` in place (wrapping uint64): the pre-mix key of one n-gram kind."""
    keys *= _GOLD
    keys += salt
    return keys


def _signed_counts(h: np.ndarray) -> np.ndarray:
    """Signed bucket counts (float64, ``TEXT_DIMS``) of mixed keys ``h`` (consumed).

    Bucket from the high 32 bits by multiply-shift (a modulo on uint64 is ~5x slower); sign from bit 31.
    Counting ``2 * bucket + sign_bit`` without weights and subtracting is exact (the counts are integers)
    and cheaper than a weighted ``bincount`` per n-gram kind, so all kinds share one pass.
    """
    sign = h >> _S31
    sign &= _ONE
    h >>= _S32
    h *= _DIMS
    h >>= _S32
    h <<= _ONE
    h |= sign
    c = np.bincount(h.view(np.int64), minlength=2 * TEXT_DIMS)
    return (c[1::2] - c[0::2]).astype(np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.sqrt(v @ v))
    return v / n if n > 0 else v


def hash_tokens(token_ids: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Signed hash histogram of token-id unigrams and bigrams (unnormalised, float64)."""
    ids = np.asarray(token_ids, dtype=np.uint64)
    n = ids.size
    keys = np.empty(2 * n - 1 if n > 1 else n, dtype=np.uint64)
    keys[:n] = ids
    _keys(keys[:n], _SALT["tok1"])
    if n > 1:
        big = keys[n:]
        np.left_shift(ids[:-1], _S32, out=big)
        big ^= ids[1:]
        _keys(big, _SALT["tok2"])
    return _signed_counts(_mix(keys))


def hash_utf8(data: bytes) -> np.ndarray:
    """Signed hash histogram of byte 3- and 5-grams of ``data`` (already lower-cased, UTF-8): byte n-gram
    ``b[i] | b[i+1] << 8 | ...`` -> ``key * GOLD + salt`` (3 or 5) -> :func:`_mix` -> :func:`_signed_counts`'s
    bucket and sign, computed in one compiled pass (:func:`rlroute.features.kernels.byte_ngram_counts`)."""
    from rlroute.features.kernels import byte_ngram_counts  # numba: imported (and compiled) on first use

    return byte_ngram_counts(np.frombuffer(data, dtype=np.uint8), TEXT_DIMS)  # type: ignore[no-any-return]


def lower_utf8(text: str) -> bytes:
    """The lower-cased text as UTF-8 (lone surrogates passed through, as the router's tokens do)."""
    if text.isascii():  # O(1) flag; ASCII bytes lower-case alone (A-Z), as str.lower does for ASCII
        return text.encode("ascii").lower()
    return text.lower().encode("utf-8", "surrogatepass")


def hash_bytes(text: str) -> np.ndarray:
    """Signed hash histogram of byte 3- and 5-grams of the lower-cased text (unnormalised, float64)."""
    return hash_utf8(lower_utf8(text))


def token_array(request: Request) -> tuple[int, ...] | np.ndarray:
    """``request.token_ids``, as the workload's int32 array when it attached one for exactly this tuple
    (identity check: a request rebuilt with other ids but a copied cache falls back to the tuple)."""
    tagged = request.cache.get(TOKEN_ARRAY_KEY)
    if isinstance(tagged, tuple) and len(tagged) == 2 and tagged[0] is request.token_ids:
        return tagged[1]  # type: ignore[no-any-return]
    return request.token_ids or ()


def sends_text(request: Request) -> bool:
    """True if the client sends (non-empty) text for ``request``: prompt text or context filler."""
    return bool(request.prompt) or filler_tokens(request) > 0


def client_window(request: Request) -> str:
    """The last ``TEXT_WINDOW_CHARS`` characters of the text the client sends (``""`` for ids only)."""
    return client_tail(request, TEXT_WINDOW_CHARS)


def hashed_text(request: Request) -> np.ndarray:
    """The ``TEXT_DIMS`` text vector of the hashing representation, L2-normalised (zeros if no content).

    What the router can compute from the client's body without tokenising (tokenising a 2k-token prompt
    costs ~3 ms): byte 3/5-grams of the text's window (:func:`client_window`), else uni+bigrams of the last
    ``TEXT_WINDOW_CHARS / BYTES_PER_TOKEN`` token ids the client sent.
    """
    window = client_window(request)
    if window:
        return _unit(hash_utf8(lower_utf8(window)))
    if request.token_ids:
        return _unit(hash_tokens(token_array(request)[-(TEXT_WINDOW_CHARS // BYTES_PER_TOKEN):]))
    return np.zeros(TEXT_DIMS, dtype=np.float64)


def cues(request: Request) -> tuple[bool, bool, int, int]:
    """Structural cues ``(has_code, has_math, questions, reasoning_cues)`` of the client's text (memoised).

    ``has_code``: any of ``_CODE_CUES`` in the lower-cased text; ``has_math``: any of ``_MATH_CUES`` or
    arithmetic (``digit op digit`` once spaces are dropped, e.g. ``3 + 4`` or ``x^2=9``); ``questions``: count of ``?``; ``reasoning_cues``: total count
    of ``_REASONING_CUES`` substrings. All 0 without text. Only the window :func:`client_window` is
    scanned (cut before lower-casing, which may change lengths), as for the text dims.
    """
    hit = request.cache.get("features.cues")
    if hit is not None:
        return hit  # type: ignore[return-value]
    window = client_window(request)
    out = _CUES_MEMO.get(window)
    if out is None:
        out = scan_cues(lower_utf8(window))
        _CUES_MEMO.put(window, out, len(window))
    request.cache["features.cues"] = out
    return out


def requested_output(request: Request) -> int:
    """Output tokens the client asked for (its ``max_new_tokens`` / ``max_tokens``), 0 when it set none.

    Never the request's true output length: workloads draw the client's cap independently of it
    (:mod:`rlroute.workload.caps`).
    """
    return request.max_new_tokens if request.max_new_tokens is not None else 0


def prompt_tokens(request: Request) -> int:
    """The prompt length as the router counts it from the client's body: pseudo-tokens of the whole text's
    UTF-8 bytes (:func:`rlroute.workload.client.client_tokens`: filler + prompt), else the number of ids
    sent. Memoised in ``request.cache``."""
    hit = request.cache.get("features.prompt_tokens")
    if hit is not None:
        return hit  # type: ignore[return-value]
    n = client_tokens(request)
    request.cache["features.prompt_tokens"] = n
    return n


def complexity(request: Request) -> float:
    """The seed's complexity score in [0, 1]; the seed heuristic routes scores > 0.7 to the large pool.

    Deterministic, from the request alone, with ``ramp(x, lo, hi) = clip(log(x/lo) / log(hi/lo), 0, 1)``:

    * with text (what a client sends for every workload request, filler included):
      ``clip(0.45 L + 0.35 code + 0.35 math + 0.15 min(questions, 3)/3 + 0.10 min(reasoning_cues, 3)/3,
      0, 1)`` with ``L = ramp(n, 32, 32768)``, ``n`` = :func:`prompt_tokens`, and the 0/1 code/math cues of
      :func:`cues`;
    * without text (a client that sends ``input_ids`` only): ``ramp(n, 128, 131072)`` (> 0.7 above ~16k
      tokens), since length is all that is known.

    The requested output length is left out: workloads report a client cap (``max_new_tokens``), which
    says little about difficulty. The weights are hand-set, not fitted to any quality label: a code or
    maths prompt of a few hundred tokens with a couple of questions scores ~0.6, code *and* maths or a
    long multi-question one passes 0.7 (about the hardest 7 % of the built-in synthetic prompts), a
    short factual question scores ~0.1.
    """
    from rlroute.features.kernels import complexity_score  # the one implementation (compiled)

    hit = request.cache.get("features.complexity")
    if hit is not None:
        return hit  # type: ignore[return-value]
    text = sends_text(request)
    code, math_, q, r = cues(request) if text else (False, False, 0, 0)
    score: float = complexity_score(text, code, math_, q, r, prompt_tokens(request))
    request.cache["features.complexity"] = score
    return score


def in_session(request: Request) -> bool:
    """The request continues a conversation (``turn > 0``) or its client named a session (a session header;
    workloads set ``session_id`` only for conversations of more than one turn)."""
    return request.session_id is not None or request.turn > 0


def request_scalars(request: Request) -> list[float]:
    """The 16 raw non-text request features, in schema order (see rlroute.features.spec); ``in_session`` as
    :func:`in_session`. The category is not read: a router sees none unless the client says so, so the schema
    reserves those dims.
    """
    code, math_, q, r = cues(request)
    return [
        float(prompt_tokens(request)),
        float(requested_output(request)),
        float(request.turn),
        1.0 if in_session(request) else 0.0,
        float(code),
        float(math_),
        float(q),
        float(r),
        1.0 if (sends_text(request) or request.token_ids) else 0.0,
        complexity(request),
        *([0.0] * RESERVED_DIMS),
    ]
