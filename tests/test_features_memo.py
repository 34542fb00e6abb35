"""Process-level memos of request blocks, cues and quality cues: a hit equals a fresh computation."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

from rlroute.features import FeatureExtractor, complexity
from rlroute.quality import difficulty
from rlroute.quality.latent import _HIDDEN_MEMO, LatentDifficultyQuality
from rlroute.types import Request

# The package re-exports functions named like these modules, so fetch the modules themselves.
extract_mod = importlib.import_module("rlroute.features.extract")
text_mod = importlib.import_module("rlroute.features.text")


def clear_memos() -> None:
    extract_mod._BLOCK_MEMO.clear()
    text_mod._CUES_MEMO.clear()
    difficulty._TEXT_MEMO.clear()
    _HIDDEN_MEMO.clear()


def make(**kw: object) -> Request:
    base: dict[str, object] = dict(
        id=1, arrival=0.0, input_len=40, output_len=100, prompt="User: Why does 3 + 4 = 7? def f(x): return x",
        token_ids=tuple(range(100, 140)), blocks=(11,), category="math", session_id=3, turn=1,
    )  # fmt: skip
    base.update(kw)
    return Request(**base)  # type: ignore[arg-type]


# Schema v2: the prompt text wins over token ids, the count comes from the text, and the category is not
# read; variants change what the block depends on (the prompt, else the ids, else blocks and length).
VARIANTS: list[dict[str, object]] = [
    {"prompt": None},
    {"prompt": None, "token_ids": tuple(range(101, 141))},
    {"prompt": "User: Tell me a story."},
    {"prompt": None, "token_ids": None},
    {"prompt": None, "token_ids": None, "blocks": (12,)},
    {"prompt": None, "token_ids": None, "input_len": 41},
    {"max_new_tokens": 4096},
    {"turn": 0},
    {"session_id": None, "turn": 0},
]


@pytest.mark.parametrize("change", VARIANTS)
def test_request_block_memo_hit_equals_fresh(change: dict[str, object]) -> None:
    clear_memos()
    ex = FeatureExtractor("hash")
    a = ex.request_block(make())
    b = ex.request_block(make(**change))  # different content: must not reuse a's block
    clear_memos()
    fresh_b = ex.request_block(make(**change))
    assert np.array_equal(b, fresh_b)
    assert not np.array_equal(a, b)
    hit = ex.request_block(make(**change))  # same content, new object: a memo hit, same values
    assert hit is fresh_b


def test_cues_and_complexity_memo_match_fresh() -> None:
    clear_memos()
    r = make()
    first = (text_mod.cues(r), complexity(r))
    r2 = dataclasses.replace(r, cache={})
    assert (text_mod.cues(r2), complexity(r2)) == first
    clear_memos()
    r3 = dataclasses.replace(r, cache={})
    assert (text_mod.cues(r3), complexity(r3)) == first


@pytest.mark.parametrize("category", ["math", "chat", None])
def test_quality_memo_matches_fresh(category: str | None) -> None:
    clear_memos()
    q = LatentDifficultyQuality(reference_requests=200)
    r = make(category=category)
    p1 = q.probs(r)
    clear_memos()
    p2 = q.probs(dataclasses.replace(r, cache={}))
    p3 = q.probs(dataclasses.replace(r, cache={}))  # memo hit
    assert p1 == p2 == p3
    other = q.probs(make(category=category, prompt="User: Prove that the integral of x^2 is x^3/3."))
    assert other != p1


def test_workload_token_array_gives_the_same_text_vector() -> None:
    from rlroute.workload.tokens import TOKEN_ARRAY_KEY

    ids = tuple(range(200, 900, 3))
    plain = text_mod.hashed_text(make(token_ids=ids))
    tagged = make(token_ids=ids, cache={TOKEN_ARRAY_KEY: (ids, np.asarray(ids, dtype=np.int32))})
    assert np.array_equal(text_mod.hashed_text(tagged), plain)
    # A request rebuilt with other ids but the old cache ignores the stale array.
    stale = dataclasses.replace(tagged, token_ids=ids[1:])
    assert np.array_equal(text_mod.hashed_text(stale), text_mod.hashed_text(make(token_ids=ids[1:])))


def _arithmetic_reference(text: str) -> bool:
    b = [c for c in text.encode("utf-8") if c != 32]
    return any(
        chr(b[i]).isdigit() and chr(b[i + 1]) in "+-*/^=<>" and chr(b[i + 2]).isdigit() for i in range(len(b) - 2)
    )


def test_arithmetic_cue_agrees_with_reference() -> None:
    import random

    rng = random.Random(1)
    alphabet = "ab 12+-=x^/<>*é."
    texts = ["", "3 + 4", "x^2=9", "no maths here", "a-b", "1 2 3", "7 -\u00e9 8"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    for t in texts:
        # no maths cue word can be spelt from the alphabet, so has_math is the arithmetic cue alone
        assert text_mod.scan_cues(text_mod.lower_utf8(t))[1] == _arithmetic_reference(t), t


def test_text_memo_is_bounded_by_entries_and_chars() -> None:
    from rlroute.workload.tokens import TextMemo

    memo: TextMemo[str, int] = TextMemo(max_entries=3, max_chars=10)
    for i, key in enumerate(["a", "b", "c", "d"]):
        memo.put(key, i, 1)
    assert len(memo) == 1 and memo.get("d") == 3  # the 4th entry cleared the full memo
    memo.put("long", 9, 10)  # 1 + 10 chars > 10: cleared first
    assert len(memo) == 1 and memo.chars == 10 and memo.get("d") is None
