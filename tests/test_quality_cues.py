"""The pruned-alternation cue counts equal ``min(len(regex.findall(text)), 10)`` of the full regexes."""

from __future__ import annotations

import random

import pytest

from rlroute.quality import difficulty as d

CASES = [
    "",
    "Tell me a story about a cat.",
    "def f(x): return x + 1; print(f(2)) == 3",
    "```python\nimport os\nclass A: pass\n```",
    "function g() { return 1; }",
    "Solve 3x^2 + 4 = 19 and PROVE the equation holds; compute the integral and derivative.",
    "What is the probability that 2 * 3 > 5? \\frac{1}{2} and X^2",
    "ſolve this",  # U+017F folds to "s" under re.I: non-ASCII text takes the full regex
    "Kelvin K: 3 + 4 = 7 and f(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)",
    "a;b;c;d;e;f;g;h;i;j;k;l;m;n",
]


def fuzz(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("abcdefxX^(){};=<>+-*/ \n0123456789?`\\é") + [
        "def ", "return", "class ", "function", "import", "solve", "Prove", "equation", "integral",
        "probability", "derivative", "\\frac", "```", "==", "x^",
    ]  # fmt: skip
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(n)]


@pytest.mark.parametrize("text", CASES + fuzz(400))
def test_pruned_counts_equal_full_regex(text: str) -> None:
    assert d._count_matches(text, d._CODE_ALTS, d._CODE_NEEDS, d._CODE_RE) == min(len(d._CODE_RE.findall(text)), 10)
    assert d._count_matches(text, d._MATH_ALTS, d._MATH_NEEDS, d._MATH_RE) == min(len(d._MATH_RE.findall(text)), 10)
