"""Built-in synthetic prompt set: templated multi-turn conversations that need no external data.

Designed so every routing signal matters: categories of different difficulty (chat, qa, summarization,
code, math, reasoning; translation and extraction are held out as ``test_xdomain``), structural cues
that vary within a category (number of sub-questions, code and document length, digits), a handful of
long **shared system prompts** with Zipf popularity (prefix-cache reuse across sessions) and
**multi-turn sessions** (each turn's prompt holds the earlier turns: reuse within a session).

Conversation ``i`` of a split is generated deterministically from ``(pool_seed, split, i)`` and cached, so
a pool of ``pool_size`` conversations is built lazily and the text of a given conversation never changes.

Length distributions (:class:`LogNormal`, all token counts) are ASSUMPTIONS chosen to resemble public
chat traces (ShareGPT replies: median ~200 tokens, long right tail; documents for summarisation a few
hundred to a few thousand tokens); they are parameters, not measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rlroute.workload.prompts import Conversation
from rlroute.workload.traces import check_split

_SPLIT_IDS = {"all": 0, "train": 1, "val": 2, "test": 3, "test_xdomain": 4}


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Log-normal length in tokens: ``median * exp(sigma * N(0,1))``, clipped to ``[low, high]``."""

    median: float
    sigma: float
    low: int = 1
    high: int = 8192

    def sample(self, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
        """``n`` integer lengths (a 0-d array when ``n`` is None)."""
        x = self.median * np.exp(self.sigma * rng.standard_normal(n))
        return np.clip(np.rint(x), self.low, self.high).astype(np.int64)


# Reply lengths per category (assumptions, see module docstring): median tokens, log-sd.
OUTPUT_LENGTHS: dict[str, LogNormal] = {
    "chat": LogNormal(180, 0.8, 8, 2048),
    "qa": LogNormal(120, 0.7, 8, 1024),
    "summarization": LogNormal(160, 0.5, 16, 1024),
    "code": LogNormal(320, 0.7, 16, 4096),
    "math": LogNormal(260, 0.6, 16, 4096),
    "reasoning": LogNormal(380, 0.6, 16, 4096),
    "translation": LogNormal(150, 0.6, 8, 2048),
    "extraction": LogNormal(90, 0.6, 8, 1024),
}
DOCUMENT_WORDS = LogNormal(500, 0.7, 60, 6000)  # summarisation/extraction/translation documents
CODE_LINES = LogNormal(25, 0.8, 3, 400)

_WORD_TEXT = (
    "system service request latency model cache token memory budget policy customer order invoice market "
    "energy climate river city history science network router server cluster report quarter revenue team "
    "project design review feature release user account payment shipping product warehouse supplier risk "
    "health patient study result method data sample value signal trend growth season weather travel hotel "
    "flight museum garden recipe kitchen school student teacher lesson music concert film novel author"
)
_WORDS = tuple(_WORD_TEXT.split())
_WORD_ARRAY = np.array(_WORDS)
_TOPICS = (
    "renewable energy",
    "the French revolution",
    "supply chains",
    "sleep and memory",
    "volcanoes",
    "remote work",
    "coral reefs",
    "the printing press",
    "electric cars",
    "urban gardens",
    "inflation",
    "black holes",
    "the immune system",
    "medieval trade",
    "machine translation",
    "ocean currents",
)
_LANGS = ("Python", "Rust", "Go", "TypeScript", "C++", "Java", "SQL")
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "chat": (
        "Hi! Can you suggest a weekend plan involving {t}?",
        "I'm feeling stuck with my {w} {w}. Any advice?",
        "Write a short, friendly message to my {w} about {t}.",
    ),
    "qa": (
        "What is {t}, in a few sentences?",
        "Who first studied {t}, and why does it matter today?",
        "Give three facts about {t}.",
    ),
    "summarization": (
        "Summarize the following document in five bullet points.\n\n{doc}",
        "TL;DR this report for an executive audience:\n\n{doc}",
    ),
    "code": (
        "Fix the bug in this {lang} function and explain the fix:\n```\n{code}\n```",
        "Write a {lang} function that parses a {w} {w} file and returns {w} totals. Add tests.",
        "Refactor this {lang} code for readability and performance:\n```\n{code}\n```",
    ),
    "math": (
        "Solve step by step: {eq}",
        "A {w} costs {n} dollars and a {w} costs {n} dollars. {q} Show your work.",
        "Prove or disprove: {eq}",
    ),
    "reasoning": (
        "Consider the argument below and identify the flawed assumption. {q} {q}\n\n{doc}",
        "Plan a {n}-step migration of a {w} {w} with zero downtime. {q} {q} {q}",
        "Three {w}s and {n} {w}s must be scheduled under these constraints. {q} {q}",
    ),
    "translation": ("Translate into German, keeping the tone:\n\n{doc}",),
    "extraction": ("Extract every date, amount and name from this text as JSON:\n\n{doc}",),
}
_QUESTIONS = (
    "Why?",
    "What would change if the {w} doubled?",
    "How many {w}s remain?",
    "Which option is cheapest?",
    "What is the expected {w}?",
    "Can you justify each step?",
)
_FOLLOWUPS = (
    "Can you make it shorter?",
    "Now explain it to a beginner.",
    "Add an example about {t}.",
    "What are the risks?",
    "Rewrite that as a table.",
    "Why is the second point true?",
)
_SYSTEM_RULES = (
    "You are a helpful assistant for a {w} company. Answer accurately and cite sources when you can.",
    "Never reveal internal {w} identifiers. Escalate questions about {w} {w} to a human agent.",
    "Use a concise, professional tone; prefer bullet points for lists longer than three items.",
    "When the user asks about {w} policies, quote the relevant section of the {w} handbook verbatim.",
    "Refuse requests that involve personal {w} data of third parties, and explain why politely.",
)


def _fill(rng: np.random.Generator, template: str) -> str:
    """Fill ``{w}`` ``{t}`` ``{n}`` ``{q}`` ``{lang}`` ``{eq}`` ``{doc}`` ``{code}`` slots."""
    out = []
    for i, part in enumerate(template.split("{")):
        if i == 0:
            out.append(part)
            continue
        slot, _, rest = part.partition("}")
        out.append(_slot(rng, slot) + rest)
    return "".join(out)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    # rng.integers on a length is ~10x cheaper than rng.choice on a Python tuple.
    return options[int(rng.integers(len(options)))]


def _slot(rng: np.random.Generator, slot: str) -> str:
    if slot == "w":
        return _pick(rng, _WORDS)
    if slot == "t":
        return _pick(rng, _TOPICS)
    if slot == "n":
        return str(int(rng.integers(2, 10_000)))
    if slot == "q":
        return _fill(rng, _pick(rng, _QUESTIONS))
    if slot == "lang":
        return _pick(rng, _LANGS)
    if slot == "eq":
        terms = int(rng.integers(2, 7))
        xs = " + ".join(f"{int(rng.integers(1, 99))}x^{int(rng.integers(1, 4))}" for _ in range(terms))
        return f"{xs} = {int(rng.integers(0, 1000))}, find all real x."
    if slot == "doc":
        return filler(rng, int(DOCUMENT_WORDS.sample(rng)))
    if slot == "code":
        lines = int(CODE_LINES.sample(rng))
        w = _WORD_ARRAY[rng.integers(len(_WORDS), size=(lines, 3))].tolist()
        nums = rng.integers(100, size=lines).tolist()
        return "\n".join(
            f"    {a}_{k} = {b}({c}, {n})" for k, ((a, b, c), n) in enumerate(zip(w, nums, strict=True))
        )
    raise ValueError(f"unknown template slot {{{slot}}}")


def filler(rng: np.random.Generator, n_words: int) -> str:
    """``n_words`` words of plain filler prose in sentences (stand-in text of a given length)."""
    words = _WORD_ARRAY[rng.integers(len(_WORDS), size=max(int(n_words), 1))].tolist()
    sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
    return " ".join(sentences)


@lru_cache(maxsize=1)
def system_prompts(count: int = 8, seed: int = 7) -> tuple[str, ...]:
    """``count`` shared system prompts of growing length (about 100 to 1,500 tokens)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        n_rules = 4 * (k + 1) ** 2 // 2 + 4
        out.append("\n".join(_fill(rng, str(rng.choice(_SYSTEM_RULES))) for _ in range(n_rules)))
    return tuple(out)


class SyntheticPrompts:
    """Templated multi-turn conversations across categories (see module docstring).

    Args:
        categories: category -> sampling weight for train/val/test.
        xdomain_categories: categories used only by ``test_xdomain``.
        pool_size: conversations per split (generated lazily, cached); test/val get a quarter.
        pool_seed: seed of the text generation (recorded in the config).
        n_system_prompts: number of shared system prompts; popularity is Zipf(``system_zipf``).
        p_system: share of conversations that carry a system prompt.
        mean_turns: mean user turns per conversation (1 + geometric), capped at ``max_turns``.
        output_lengths: per-category reply length distributions (defaults: :data:`OUTPUT_LENGTHS`).
    """

    def __init__(
        self,
        categories: Mapping[str, float] | None = None,
        xdomain_categories: Sequence[str] = ("translation", "extraction"),
        pool_size: int = 4000,
        pool_seed: int = 1234,
        n_system_prompts: int = 8,
        system_zipf: float = 1.2,
        p_system: float = 0.8,
        mean_turns: float = 2.5,
        max_turns: int = 8,
        output_lengths: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.categories = dict(
            categories or {"chat": 3, "qa": 2, "summarization": 1, "code": 2, "math": 1, "reasoning": 1}
        )
        self.xdomain_categories = tuple(xdomain_categories)
        if mean_turns < 1:
            raise ValueError(f"mean_turns must be >= 1, got {mean_turns}")
        self.pool_size, self.pool_seed = int(pool_size), int(pool_seed)
        self.n_system_prompts, self.system_zipf, self.p_system = n_system_prompts, system_zipf, p_system
        self.mean_turns, self.max_turns = float(mean_turns), int(max_turns)
        self.lengths = dict(OUTPUT_LENGTHS)
        for cat, params in (output_lengths or {}).items():
            self.lengths[cat] = LogNormal(**params)  # type: ignore[arg-type]
        for cat in (*self.categories, *self.xdomain_categories):
            if cat not in _TEMPLATES or cat not in self.lengths:
                raise ValueError(
                    f"synthetic category {cat!r} has no templates/lengths; known: {sorted(_TEMPLATES)}"
                )
        ranks = np.arange(1, n_system_prompts + 1, dtype=float) ** -system_zipf
        self._system_cdf = np.cumsum(ranks / ranks.sum())
        self.name = "synthetic"
        self._pools: dict[str, _LazyPool] = {}
        # Everything make() depends on: instances built from the same config (one per env of a vector
        # env, the quality model's reference workload...) share one process-level conversation store.
        self.fingerprint = (
            self.pool_seed, tuple(self.categories.items()), self.xdomain_categories, self.n_system_prompts,
            float(system_zipf), float(p_system), self.mean_turns, self.max_turns,
            tuple(sorted(self.lengths.items())),
        )  # fmt: skip

    def conversations(self, split: str = "all") -> Sequence[Conversation]:
        """A lazily generated, fixed pool of the split's conversations."""
        check_split(split)
        if split not in self._pools:
            size = self.pool_size if split in ("all", "train") else max(self.pool_size // 4, 1)
            self._pools[split] = _LazyPool(self, split, size)
        return self._pools[split]

    def make(self, split: str, index: int) -> Conversation:
        """Conversation ``index`` of ``split`` (deterministic)."""
        rng = np.random.default_rng([self.pool_seed, _SPLIT_IDS[split], index])
        cats = self.xdomain_categories if split == "test_xdomain" else tuple(self.categories)
        weights = (
            np.array([1.0] * len(cats))
            if split == "test_xdomain"
            else np.array(list(self.categories.values()))
        )
        cat = str(cats[int(rng.choice(len(cats), p=weights / weights.sum()))])
        system = None
        if rng.random() < self.p_system:
            pick = int(np.searchsorted(self._system_cdf, rng.random(), side="right"))
            system = system_prompts(self.n_system_prompts)[min(pick, self.n_system_prompts - 1)]
        extra = rng.geometric(1.0 / self.mean_turns) - 1 if self.mean_turns > 1 else 0
        n_turns = int(min(1 + extra, self.max_turns))
        turns = [_fill(rng, _pick(rng, _TEMPLATES[cat]))]
        turns += [_fill(rng, _pick(rng, _FOLLOWUPS)) for _ in range(n_turns - 1)]
        # MiniLM WordPiece gives ~1.3 tokens per filler word, so words = tokens / 1.3.
        replies = tuple(filler(rng, int(self.lengths[cat].sample(rng) / 1.3)) for _ in range(n_turns))
        return Conversation(f"synthetic/{split}/{index}", tuple(turns), replies, cat, None, system)


# (SyntheticPrompts.fingerprint, split) -> generated conversations by index, shared by every instance
# of the process with the same parameters (generation is deterministic in them: ~0.5 ms each).
_SHARED_POOLS: dict[tuple[object, str], dict[int, Conversation]] = {}


class _LazyPool(Sequence[Conversation]):
    """A read-only sequence whose items are generated on first access and then kept."""

    def __init__(self, owner: SyntheticPrompts, split: str, size: int) -> None:
        self.owner, self.split, self.size = owner, split, size
        self._items: dict[int, Conversation] = _SHARED_POOLS.setdefault((owner.fingerprint, split), {})

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        index %= self.size
        conv = self._items.get(index)
        if conv is None:
            conv = self._items[index] = self.owner.make(self.split, index)
        return conv
