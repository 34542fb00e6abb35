"""Offline tokenisation (fast ASCII path == the real tokenizer) and chained prefix-block hashes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rlroute.workload.tokens import TokenCache, chain_blocks, load_tokenizer

TEXTS = [
    "Hello, World! It's 3.14 -- isn't it?",
    "def f(x_1):\n    return x_1**2  # snake_case_name",
    "Tabs\tand\nnewlines\r\nand    spaces",
    "Café naïve résumé 東京 emoji 🙂",  # non-ASCII: goes through the tokenizer itself
    "ctrl\x07char",
    "a" * 150,  # longer than WordPiece's 100-character word limit
    "",
]


def _reference(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in load_tokenizer().encode_batch(texts, add_special_tokens=False)]


def test_fast_path_matches_tokenizer_on_edge_cases() -> None:
    got = TokenCache().encode(TEXTS)
    assert [g.tolist() for g in got] == _reference(TEXTS)


def test_no_truncation() -> None:
    long = " ".join(["word"] * 1000)
    assert len(TokenCache().encode([long])[0]) == 1000  # the packaged config would cut at 128


@pytest.mark.data
def test_fast_path_matches_tokenizer_on_mmlu(shared_data: Path) -> None:
    texts = []
    for f in sorted((shared_data / "routellm/mmlu").glob("mmlu_*.csv"))[:8]:
        with open(f, newline="", encoding="utf-8") as fh:
            texts += [r["prompt"] for r in csv.DictReader(fh)]
    got = TokenCache().encode(texts)
    assert [g.tolist() for g in got] == _reference(texts)


def test_cache_is_bounded() -> None:
    c = TokenCache(max_tokens=50)
    for i in range(20):
        c.encode([f"text number {i} " * 3])
    assert c.tokens <= 50 + 12 and len(c) < 20


@pytest.mark.parametrize("block", [1, 16, 64, 512])
def test_chain_blocks_is_a_prefix_hash(block: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 30000, 700)
    b = np.concatenate([a[:300], rng.integers(0, 30000, 400)])
    ha, hb = chain_blocks(a, block), chain_blocks(b, block)
    assert len(ha) == -(-700 // block)
    shared = 300 // block
    assert ha[:shared] == hb[:shared]
    assert all(x != y for x, y in zip(ha[shared:], hb[shared:], strict=False))
    assert chain_blocks(a[:650], block)[: 650 // block] == ha[: 650 // block]
    if 650 % block:
        assert chain_blocks(a[:650], block)[-1] != ha[650 // block]  # a partial block never equals a full one
    assert all(0 <= h < 2**63 for h in ha)
    assert chain_blocks(a, block, salt=1)[0] != ha[0]


def test_chain_blocks_depends_on_all_earlier_blocks() -> None:
    a = np.arange(256)
    b = a.copy()
    b[0] = 9999
    ha, hb = chain_blocks(a, 64), chain_blocks(b, 64)
    assert all(x != y for x, y in zip(ha, hb, strict=True))
    assert chain_blocks(np.zeros(0, dtype=np.int64), 64) == ()


def test_word_memo_overflow_keeps_every_needed_word() -> None:
    # Clearing the word memo when it is full must not drop words the same batch still needs.
    ref = TokenCache()
    small = TokenCache(max_words=6)
    small.encode(["alpha beta gamma"])
    texts = ["alpha beta delta epsilon zeta eta", "gamma theta"]
    assert all(np.array_equal(a, b) for a, b in zip(small.encode(texts), ref.encode(texts), strict=True))
