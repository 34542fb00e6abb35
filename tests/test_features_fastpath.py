"""The request block's compiled path (rlroute.features.kernels) equals its Python reference bit for bit.

``_Reference`` below is the reference: the implementation of schema version 1 before the single-pass
rewrite (commit ``e2b17e6``) for the hashing and cues — per-n-gram-kind weighted ``bincount``, byte
n-grams packed with shifts, cues as ``str`` substring tests on the lower-cased window — and, for the rest of
the block, the Python formulation the kernel replaced (commit ``16220a5``): the scalars, the complexity
score and the schema's vectorised transform (:class:`rlroute.features.schema.BlockTransform`). It is used
only here. Exported policies depend on these exact values, so the compiled path must not move a single bit.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import random

import numpy as np
import pytest

from rlroute.features import TEXT_DIMS, FeatureExtractor
from rlroute.features.kernels import finish_block
from rlroute.types import Request
from rlroute.workload.client import client_tokens

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


    @staticmethod
    def ramp(x: float, lo: float, hi: float) -> float:
        return 0.0 if x <= lo else min(1.0, math.log(x / lo) / math.log(hi / lo))

    @classmethod
    def complexity(cls, req: Request) -> float:
        n = float(client_tokens(req))
        if text_mod.sends_text(req):
            code, math_, q, r = cls.cues(text_mod.client_window(req))
            score = 0.45 * cls.ramp(n, 32.0, 32768.0) + 0.35 * code + 0.35 * math_ + 0.15 * min(q, 3) / 3 + 0.10 * min(r, 3) / 3
        else:
            score = cls.ramp(n, 128.0, 131072.0)
        return min(1.0, max(0.0, score))

    @classmethod
    def request_block(cls, req: Request) -> np.ndarray:
        window = text_mod.client_window(req)
        if window:
            v = cls.hash_bytes(window)
        elif req.token_ids:
            v = cls.hash_tokens(tuple(req.token_ids[-(text_mod.TEXT_WINDOW_CHARS // 4) :]))
        else:
            v = np.zeros(TEXT_DIMS)
        n = float(np.sqrt(v @ v))
        code, math_, q, r = cls.cues(window)
        raw = np.concatenate([v / n if n > 0 else v, [
            float(client_tokens(req)), float(req.max_new_tokens or 0), float(req.turn),
            1.0 if (req.session_id is not None or req.turn > 0) else 0.0, float(code), float(math_), float(q),
            float(r), 1.0 if (text_mod.sends_text(req) or req.token_ids) else 0.0, cls.complexity(req), *[0.0] * 6,
        ]])  # fmt: skip
        out = np.empty(raw.size, dtype=np.float32)
        _EX.schema.transformer("request")(raw, out)
        return out


_EX = FeatureExtractor("hash")


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


def _variants(p: str, i: int) -> list[Request]:
    """Requests a client sends with text ``p``: caps, turns and sessions varied, and the trace forms (a
    trace's context as filler before the prompt; a timing-only request, all filler)."""
    base = Request(id=i, arrival=0.0, input_len=len(p) // 4 + 1, output_len=8, prompt=p)
    cap = (0, 1, 16, 255, 8192, 9000, None)[i % 7]
    return [
        base,
        dataclasses.replace(base, max_new_tokens=cap, turn=i % 40, session_id=i if i % 3 else None),
        dataclasses.replace(base, context_tokens=37 * (i % 500), blocks=tuple(range(i, i + i % 11)), block_size=16),
        Request(id=i, arrival=0.0, input_len=i % 9000, output_len=8, blocks=(i, i + 1), block_size=64,
                max_new_tokens=cap),
    ]


def _check(prompts: list[str]) -> None:
    for i, p in enumerate(prompts):
        assert text_mod.hash_bytes(p).tobytes() == _Reference.hash_bytes(p).tobytes(), p[:80]
        text_mod._CUES_MEMO.clear()
        r = Request(id=0, arrival=0.0, input_len=len(p) // 4 + 1, output_len=8, prompt=p)
        assert text_mod.cues(r) == _Reference.cues(p), p[:80]
        for req in _variants(p, i):
            block = _EX._cold_block(dataclasses.replace(req, cache={}))
            assert block.tobytes() == _Reference.request_block(req).tobytes(), (p[:80], req)
            fresh = dataclasses.replace(req, cache={})
            assert text_mod.complexity(fresh) == _Reference.complexity(req), (p[:80], req)


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


def test_request_block_memo_and_cache_hold_the_kernel_values() -> None:
    """The memoised block, the cues and the complexity the heuristic reads afterwards are the reference's."""
    p = _synthetic_prompts(3)[0]
    a = Request(id=1, arrival=0.0, input_len=300, output_len=64, prompt=p + " #memo")
    block = _EX.request_block(a)
    assert block.tobytes() == _Reference.request_block(a).tobytes() and not block.flags.writeable
    assert text_mod.cues(a) == _Reference.cues(p + " #memo")
    assert text_mod.complexity(a) == _Reference.complexity(a)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 57, 2048])
def test_ids_only_block_bit_identical(n: int) -> None:
    rng = np.random.default_rng(n)
    ids = tuple(int(x) for x in rng.integers(0, 30_000, n))
    req = Request(id=n, arrival=0.0, input_len=n, output_len=4, token_ids=ids, max_new_tokens=n * 7, turn=n % 5)
    assert _EX._cold_block(req).tobytes() == _Reference.request_block(req).tobytes()


def test_log_tables_equal_the_transform_at_every_count() -> None:
    """Each ``log`` feature's table is what the vectorised transform gives at every count up to past its cap
    (and beyond, the bound); a count outside the tables goes through the transform itself."""
    tf = _EX.schema.transformer("request")
    size = len(_EX.schema.features[_EX.schema.slices["request"]])
    logs = [j for j, f in enumerate(_EX.schema.features[: size]) if f.kind == "log"]
    assert len(logs) == 5
    for j in logs:
        cap = math.ceil(_EX.schema.features[j].cap)
        for x in [*range(cap + 3), cap * 4, 10**9]:
            raw = np.zeros(size)
            raw[j] = x
            want = np.empty(size, dtype=np.float32)
            tf(raw.copy(), want)
            got = np.empty(size, dtype=np.float32)
            assert finish_block(raw, _EX._tables.lin, _EX._tables.tables, got)
            assert got.tobytes() == want.tobytes(), (j, x)
        for x in (-1.0, 0.5, float("nan")):
            raw = np.zeros(size)
            raw[j] = x
            assert not finish_block(raw, _EX._tables.lin, _EX._tables.tables, got)
    bad = Request(id=0, arrival=0.0, input_len=10, output_len=4, prompt="negative cap", max_new_tokens=-3)
    assert _EX._cold_block(bad).tobytes() == _Reference.request_block(bad).tobytes()
