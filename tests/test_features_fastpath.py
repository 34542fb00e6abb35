"""The serving cold path of the request block (byte n-gram hashing, cues) equals the previous code bit for bit.

``_Reference`` below is the implementation of schema version 1 before the single-pass rewrite (commit
``e2b17e6``), kept verbatim in substance: per-n-gram-kind weighted ``bincount``, byte n-grams packed with
shifts, cues as ``str`` substring tests on the lower-cased window. Exported policies depend on these
exact values, so the rewrite must not move a single bit.
"""

from __future__ import annotations

import importlib
import random

import numpy as np
import pytest

from rlroute.features import TEXT_DIMS, FeatureExtractor
from rlroute.types import Request

text_mod = importlib.import_module("rlroute.features.text")

_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_SALT = {k: np.uint64(v) for k, v in {"tok1": 1, "tok2": 2, "byte3": 3, "byte5": 5}.items()}


class _Reference:
    """The pre-rewrite hashing and cues (schema version 1)."""

    @staticmethod
    def signed_hist(keys: np.ndarray, salt: np.uint64) -> np.ndarray:
        h = keys * _GOLD + salt
        h ^= h >> np.uint64(30)
        h *= _C1
        h ^= h >> np.uint64(27)
        h *= _C2
        h ^= h >> np.uint64(31)
        bucket = (((h >> np.uint64(32)) * np.uint64(TEXT_DIMS)) >> np.uint64(32)).astype(np.intp)
        sign = ((h >> np.uint64(31)) & np.uint64(1)).astype(np.float64) * 2.0 - 1.0
        return np.bincount(bucket, weights=sign, minlength=TEXT_DIMS)

    @classmethod
    def hash_bytes(cls, text: str) -> np.ndarray:
        b = np.frombuffer(text.lower().encode("utf-8"), dtype=np.uint8).astype(np.uint64)
        v = np.zeros(TEXT_DIMS, dtype=np.float64)
        for n, salt in ((3, _SALT["byte3"]), (5, _SALT["byte5"])):
            if b.size < n:
                continue
            key = b[: b.size - n + 1].copy()
            for k in range(1, n):
                key |= b[k : b.size - n + 1 + k] << np.uint64(8 * k)
            v += cls.signed_hist(key, salt)
        return v

    @classmethod
    def hash_tokens(cls, ids_: tuple[int, ...]) -> np.ndarray:
        ids = np.asarray(ids_, dtype=np.uint64)
        v = cls.signed_hist(ids.copy(), _SALT["tok1"])
        if ids.size > 1:
            v += cls.signed_hist((ids[:-1] << np.uint64(32)) ^ ids[1:], _SALT["tok2"])
        return v

    @staticmethod
    def cues(prompt: str) -> tuple[bool, bool, int, int]:
        text = prompt[-text_mod.TEXT_WINDOW_CHARS :].lower()
        b = [c for c in text.encode("utf-8") if c != 32]
        arith = any(
            48 <= b[i] <= 57 and chr(b[i + 1]) in "+-*/^=<>" and 48 <= b[i + 2] <= 57
            for i in range(len(b) - 2)
        )
        return (
            any(c in text for c in text_mod._CODE_CUES),
            any(c in text for c in text_mod._MATH_CUES) or arith,
            text.count("?"),
            sum(text.count(c) for c in text_mod._REASONING_CUES),
        )


def _synthetic_prompts(n: int) -> list[str]:
    from rlroute.workload.synthetic import SyntheticPrompts

    convs = SyntheticPrompts(pool_size=n).conversations("train")[:n]
    out = []
    for c in convs:
        out.append((c.system or "") + "\n\n".join(c.turns))
        out.append(c.turns[-1])
    return out


def _random_texts(n: int) -> list[str]:
    rng = random.Random(7)
    alphabet = "ab def class why?$ 12+-=x^/<>*\u00e9.\u0130\u017f\n(){};</`\\frac explain step by step reason"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(n)]
    # Self-overlapping cues (str.count is non-overlapping), lengths around the 4-byte scan and the cue
    # window, characters whose lower case changes length.
    texts += ["step by step by step", "whywhy", "analyzanalys", "def", "$", "ab", "x" * 5000 + "def ",
              "\u0130" * 3000 + "explain" * 200, "3 + 4", "1 2 3", "7 -\u00e9 8", "```py\nreturn 1;}"]  # fmt: skip
    return texts


def _check(prompts: list[str]) -> None:
    for p in prompts:
        assert text_mod.hash_bytes(p).tobytes() == _Reference.hash_bytes(p).tobytes(), p[:80]
        text_mod._CUES_MEMO.clear()
        r = Request(id=0, arrival=0.0, input_len=len(p) // 4 + 1, output_len=8, prompt=p)
        text_mod.hashed_text(r)  # leaves the lower-cased bytes for cues(), as on the serving path
        assert text_mod.cues(r) == _Reference.cues(p), p[:80]


def test_bytes_path_bit_identical_on_synthetic_prompts() -> None:
    _check(_synthetic_prompts(60))


def test_bytes_path_bit_identical_on_edge_texts() -> None:
    _check(_random_texts(1500))


def test_bytes_path_bit_identical_on_mmlu(shared_data: object) -> None:
    from rlroute.workload.prompts import RouteLLMPrompts

    try:
        convs = RouteLLMPrompts().conversations("all")
    except FileNotFoundError as e:
        pytest.skip(f"MMLU prompts not available: {e}")
    rng = random.Random(0)
    _check([c.turns[0] for c in rng.sample(convs, min(300, len(convs)))])


@pytest.mark.parametrize("n", [1, 2, 3, 57, 2048])
def test_token_path_bit_identical(n: int) -> None:
    rng = np.random.default_rng(n)
    ids = tuple(int(x) for x in rng.integers(0, 2**31, n))
    assert text_mod.hash_tokens(ids).tobytes() == _Reference.hash_tokens(ids).tobytes()
    arr = np.asarray(ids, dtype=np.int32)
    assert text_mod.hash_tokens(arr).tobytes() == _Reference.hash_tokens(ids).tobytes()


def test_request_block_same_with_or_without_handover() -> None:
    """cues() computed without the bytes hashed_text leaves (another caller order) gives the same block."""
    ex = FeatureExtractor("hash")
    p = _synthetic_prompts(3)[0]
    a = Request(id=1, arrival=0.0, input_len=300, output_len=64, prompt=p)
    b = Request(id=2, arrival=0.0, input_len=300, output_len=64, prompt=p + " ")
    text_mod._CUES_MEMO.clear()
    cues_first = text_mod.cues(b)  # no handover yet
    assert cues_first == _Reference.cues(p + " ")
    block = ex.request_block(a)
    assert np.isfinite(block).all() and text_mod._LOWER_KEY not in a.cache
