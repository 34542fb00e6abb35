"""Cheap, deterministic prompt tokenisation and block hashing shared by the worker and the router.

Real SGLang tokenises with the model's tokenizer and keys its radix cache on token ids. The emulated
worker and the router only need (1) a token count close to a BPE tokenizer's and (2) block ids that are
equal exactly when the prompt prefixes are equal, identical in every process. Both come from the UTF-8
bytes: one pseudo-token per :data:`BYTES_PER_TOKEN` bytes (English BPE tokenizers average ~4 characters
per token — OpenAI's tokenizer guide quotes "1 token ~= 4 chars in English"), and each block of
``block_size`` pseudo-tokens is hashed with BLAKE2b chained on the previous block's hash, like
Mooncake's ``hash_ids`` and SGLang's paged radix keys. Python's ``hash`` is salted per process, so it is
not used. Lone surrogates (valid in JSON, not in UTF-8) are encoded with ``surrogatepass``. Costs a few microseconds per kilobyte, which matters in the router's per-request path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

BYTES_PER_TOKEN = 4
DEFAULT_BLOCK_SIZE = 64  # tokens per block, rlroute.types.Request's default


def count_tokens(text: str) -> int:
    """Pseudo-token count of ``text`` (at least 1 for a non-empty prompt)."""
    # UTF-8 bytes; an ASCII string (a flag CPython keeps: O(1) to read) has one byte per character
    n = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return (n + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def _chain(raw: bytes, chunk: int) -> tuple[int, ...]:
    out: list[int] = []
    prev = b""
    for start in range(0, len(raw) - chunk + 1, chunk):
        digest = hashlib.blake2b(prev + raw[start : start + chunk], digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") >> 1)  # keep ids positive in int64
        prev = digest
    return tuple(out)


def text_blocks(text: str, block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[int, ...]:
    """Chained hashes of the full ``block_size``-token blocks of ``text`` (a partial tail is not a block).

    Args:
        text: the prompt.
        block_size: pseudo-tokens per block.

    Returns:
        One id per full block; equal leading ids mean equal leading text.
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be a positive number of tokens, got {block_size}")
    return _chain(text.encode("utf-8", "surrogatepass"), block_size * BYTES_PER_TOKEN)


def id_blocks(token_ids: Sequence[int] | np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[int, ...]:
    """Chained hashes of the full blocks of real token ids (``/generate`` with ``input_ids``)."""
    if block_size <= 0:
        raise ValueError(f"block_size must be a positive number of tokens, got {block_size}")
    raw = np.asarray(token_ids, dtype="<i8").tobytes()
    return _chain(raw, block_size * 8)


def chat_prompt(messages: Sequence[dict[str, object]]) -> str:
    """Flatten OpenAI chat messages into the prompt text the worker and router both hash.

    A fixed, simple template (``role: content`` lines) stands in for the model's chat template; what
    matters is that the router and the worker build the same text, so their prefix blocks agree.
    """
    parts = []
    for m in messages:
        content = m.get("content", "")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(f"{m.get('role', 'user')}: {content}\n")
    return "".join(parts) + "assistant: "


_WORDS = ("the", "plan", "is", "to", "route", "each", "request", "with", "care", "and", "cache", "well")


def filler_ids(n_tokens: int, seed: int = 0) -> list[int]:
    """The emulated model's token ids of :func:`filler_text` (one per generated word; ``output_ids``)."""
    return [1000 + (seed + i) % len(_WORDS) for i in range(n_tokens)]


def filler_text(n_tokens: int, seed: int = 0) -> str:
    """Deterministic generated text of ``n_tokens`` words (the emulated model's output)."""
    return "".join(" " + _WORDS[(seed + i) % len(_WORDS)] for i in range(n_tokens))


# -- emulation hooks: what a real model's EOS and its chat client would tell the worker ------------------
OUTPUT_TOKENS_HEADER = "x-rlroute-output-tokens"
OUTPUT_BLOCKS_HEADER = "x-rlroute-output-blocks"
EMULATION_HEADERS = (OUTPUT_TOKENS_HEADER, OUTPUT_BLOCKS_HEADER)  # what rlroute serve passes on to workers
MASK31 = (1 << 31) - 1
MULT = 0x9E3779B1  # Knuth's multiplicative-hash constant: spreads consecutive block ids apart


def block_ids(blocks: Sequence[int], block_size: int) -> np.ndarray:
    """Token ids standing for chained block hashes: block ``h`` -> ``block_size`` ids ``(h*MULT + j) mod 2^31``
    (``int64[len(blocks) * block_size]``). The live cluster sends prompts so; the worker expands an answer's
    blocks the same way."""
    if not len(blocks):
        return np.empty(0, dtype=np.int64)
    h = (np.asarray([int(b) for b in blocks], dtype=np.uint64) * np.uint64(MULT)) & np.uint64(MASK31)
    j = np.arange(block_size, dtype=np.uint64)
    return ((h[:, None] + j[None, :]) & np.uint64(MASK31)).astype(np.int64).reshape(-1)


def output_blocks_header(blocks: Sequence[int], block_size: int) -> str:
    """``block_size:h1,h2,...``: the chained ids the next turn's prompt carries for this answer
    (``Request.output_blocks``)."""
    return f"{int(block_size)}:" + ",".join(str(int(b)) for b in blocks)


def parse_output_blocks(value: str) -> tuple[int, tuple[int, ...]]:
    """Inverse of :func:`output_blocks_header`; raises ``ValueError`` saying what was expected."""
    try:
        size, _, ids = value.partition(":")
        bs, blocks = int(size), tuple(int(x) for x in ids.split(",") if x)
    except ValueError as e:
        raise ValueError(f"{OUTPUT_BLOCKS_HEADER}: expected 'block_size:id,id,...', got {value[:80]!r}") from e
    if bs <= 0 or any(b < 0 for b in blocks):
        raise ValueError(f"{OUTPUT_BLOCKS_HEADER}: expected a positive block size and ids >= 0, got {value[:80]!r}")
    return bs, blocks


def answer_blocks(ids: Sequence[int], blocks: tuple[int, ...], out_bs: int, out_blocks: tuple[int, ...],
                  block_size: int) -> tuple[int, ...]:
    """The worker's block ids of an answer, as the next turn's ``input_ids`` will hash them.

    The next turn's prompt is this prompt's full ``out_bs``-token blocks followed by ``out_blocks`` (expanded by
    :func:`block_ids`); its ``block_size``-token blocks past this prompt's full blocks ``blocks`` are the
    answer's. ``()`` when the two chains disagree on this prompt's full blocks — the prompt ends inside one of
    the client's (coarser) blocks but past one of the worker's: the next turn rewrites that tail, so the
    answer's chain does not extend this prompt's (the simulator inserts at the client's block size, where
    they agree).
    """
    n = len(ids)
    keep = (n // out_bs) * out_bs
    seq = np.concatenate([np.asarray(ids[:keep], dtype=np.int64), block_ids(out_blocks, out_bs)])
    keys = id_blocks(seq, block_size)
    nfull = n // block_size
    if len(keys) <= nfull or keys[:nfull] != blocks[:nfull]:
        return ()
    return keys[nfull:]
