"""Observable request properties that make a request hard, and the difficulty score built from them.

The latent-difficulty quality model (:mod:`rlroute.quality.latent`) sets a request's difficulty from
these properties plus unobservable noise, so that a router *can* learn part of it from the request.
They are computed from what a router sees: the category (when the workload knows it), the newest user
message's text, and the prompt length. Feature code (``rlroute.features``) may call
:func:`request_properties` to expose the same cues.

All weights here are ASSUMPTIONS (documented in ``conf/quality/latent.yaml``): they encode "code, maths,
multi-part questions and long questions are harder; chat is easier" and are not fitted to data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice

from rlroute.types import Request
from rlroute.workload.tokens import TextMemo

_CODE_ALTS = (
    r"```", r"\bdef ", r"\breturn\b", r"\bclass ", r"[{};]", r"==", r"\bfunction\b", r"\bimport\b", r"\w+\(.*?\)",
)  # fmt: skip
_MATH_ALTS = (
    r"\d+\s*[-+*/^=<>]\s*\d+", r"\^", r"\\frac", r"\bsolve\b", r"\bprove\b", r"\bequation", r"\bintegral",
    r"\bprobability", r"\bderivative", r"x\^",
)  # fmt: skip
_CODE_RE = re.compile("|".join(_CODE_ALTS))
_MATH_RE = re.compile("|".join(_MATH_ALTS), re.I)
# Necessary substrings of each alternative (any one of a group must occur; all groups must): an
# alternative whose substrings are absent from a text can match nowhere in it, so dropping it from the
# alternation leaves findall's leftmost-first matches unchanged -- and most prose keeps no alternative
# at all, which skips the regex scan (~50-500 us per prompt). Math is case-insensitive: the check runs on
# the lower-cased text, exact for ASCII text only (re.I folds e.g. U+017F to "s"), so non-ASCII text
# takes the full regex.
_CODE_NEEDS: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("```",),), (("def ",),), (("return",),), (("class ",),), (("{", "}", ";"),), (("==",),),
    (("function",),), (("import",),), (("(",), (")",)),
)  # fmt: skip
_MATH_NEEDS: tuple[tuple[tuple[str, ...], ...], ...] = (
    (tuple("+-*/^=<>"), tuple("0123456789")), (("^",),), (("\\frac",),), (("solve",),), (("prove",),),
    (("equation",),), (("integral",),), (("probability",),), (("derivative",),), (("x^",),),
)  # fmt: skip
_REDUCED: dict[tuple[int, tuple[int, ...]], re.Pattern[str]] = {}


def _count_matches(
    text: str,
    alts: tuple[str, ...],
    needs: tuple[tuple[tuple[str, ...], ...], ...],
    full: re.Pattern[str],
    cap: int = 10,
) -> int:
    """``min(len(full.findall(text)), cap)``, scanning only with the alternatives that can match."""
    if not text.isascii():
        return min(len(full.findall(text)), cap)
    probe = text.lower() if full.flags & re.I else text
    keep = tuple(
        i for i, groups in enumerate(needs) if all(any(sub in probe for sub in group) for group in groups)
    )
    if not keep:
        return 0
    key = (id(alts), keep)
    rx = _REDUCED.get(key)
    if rx is None:
        rx = _REDUCED[key] = re.compile("|".join(alts[i] for i in keep), full.flags)
    return sum(1 for _ in islice(rx.finditer(text), cap))

# Substring of the (lower-cased) category -> difficulty offset in logits; first match wins (assumption).
DEFAULT_CATEGORY_DIFFICULTY: dict[str, float] = {
    "chat": -0.8,
    "writing": -0.6,
    "roleplay": -0.6,
    "summar": -0.5,
    "extraction": -0.2,
    "qa": -0.3,
    "translation": 0.0,
    "humanities": 0.0,
    "math": 0.9,
    "statistic": 0.8,
    "physics": 0.7,
    "chemistry": 0.7,
    "reasoning": 0.7,
    "logic": 0.7,
    "fallac": 0.5,
    "code": 0.6,
    "coding": 0.6,
    "computer": 0.6,
    "machine_learning": 0.6,
    "law": 0.6,
    "accounting": 0.5,
    "econometrics": 0.6,
    "moral_scenarios": 0.6,
    "stem": 0.4,
}
# Weights of the structural cues, in logits per unit (assumption).
DEFAULT_WEIGHTS: dict[str, float] = {"length": 0.35, "code": 0.8, "math": 1.0, "questions": 0.6}


@dataclass(frozen=True, slots=True)
class RequestProperties:
    """Difficulty-relevant cues of one request, each roughly in [0, 1] except ``log_words``.

    Attributes:
        category: the workload's category, or ``None``.
        log_words: ``log1p`` of the newest user message's word count (of ``input_len / 1.3`` for
            requests without text).
        code: code markers in the message, ``min(count, 10) / 10``.
        math: maths markers (equations, ``solve``/``prove``...), ``min(count, 10) / 10``.
        questions: question marks, ``min(count, 5) / 5``.
    """

    category: str | None
    log_words: float
    code: float
    math: float
    questions: float


def last_user_message(prompt: str) -> str:
    """The newest user message of a ``User: ... Assistant:`` formatted prompt (the whole text otherwise)."""
    i = prompt.rfind("User: ")
    text = prompt[i + 6 :] if i >= 0 else prompt
    if text.endswith("Assistant:"):
        text = text[: -len("Assistant:")]
    return text


# Process-level memo of text cues, keyed by (prompt, category): the regex scans cost ~50-500 us per
# prompt, and every env reset materialises new Request objects for prompts seen before (a synthetic
# pool or a prompt set has a few thousand distinct prompts). The prompt string usually is the same
# object the workload memoised, so its hash is cached and a hit costs ~0.2 us. Bounded (TextMemo).
_TEXT_MEMO: TextMemo[tuple[str, str | None], RequestProperties] = TextMemo()


def _text_properties(prompt: str, category: str | None) -> RequestProperties:
    key = (prompt, category)
    hit = _TEXT_MEMO.get(key)
    if hit is not None:
        return hit
    text = last_user_message(prompt)
    props = RequestProperties(
        category=category,
        log_words=math.log1p(len(text.split())),
        code=_count_matches(text, _CODE_ALTS, _CODE_NEEDS, _CODE_RE) / 10.0,
        math=_count_matches(text, _MATH_ALTS, _MATH_NEEDS, _MATH_RE) / 10.0,
        questions=min(text.count("?"), 5) / 5.0,
    )
    _TEXT_MEMO.put(key, props, len(prompt))
    return props


def request_properties(request: Request) -> RequestProperties:
    """The cues of ``request`` (cached in ``request.cache['quality.properties']``; text cues are also
    memoised per process by prompt and category, as they depend on nothing else)."""
    hit = request.cache.get("quality.properties")
    if isinstance(hit, RequestProperties):
        return hit
    if request.prompt:
        props = _text_properties(request.prompt, request.category)
    else:
        props = RequestProperties(request.category, math.log1p(request.input_len / 1.3), 0.0, 0.0, 0.0)
    request.cache["quality.properties"] = props
    return props


def category_offset(category: str | None, table: Mapping[str, float]) -> float:
    """Offset of the first key of ``table`` contained in ``category`` (0 when none or unknown)."""
    if not category:
        return 0.0
    c = category.lower()
    for key, value in table.items():
        if key in c:
            return float(value)
    return 0.0


def observable_score(
    props: RequestProperties, weights: Mapping[str, float], categories: Mapping[str, float]
) -> float:
    """Unstandardised observable difficulty: category offset plus weighted structural cues."""
    return (
        category_offset(props.category, categories)
        + weights.get("length", 0.0) * props.log_words
        + weights.get("code", 0.0) * props.code
        + weights.get("math", 0.0) * props.math
        + weights.get("questions", 0.0) * props.questions
    )
