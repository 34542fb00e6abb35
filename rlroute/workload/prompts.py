"""Prompt sets: conversations with text, category and (where known) per-model correctness labels.

A prompt set gives, per split, a fixed sequence of :class:`Conversation` records; a workload
(:mod:`rlroute.workload.compose`) decides when they arrive. Sets here:

- :class:`RouteLLMPrompts`: RouteLLM's labelled CSVs (``prompt`` + one True/False column per model),
  e.g. ``routellm/mmlu/mmlu_<subject>.csv``; category = subject; RouteLLM's contaminated prompts are
  excluded on request. Model columns map to roles (default Mixtral-8x7B = small, GPT-4 = large).
- :class:`MTBenchPrompts`: the 80 two-turn MT-Bench questions, with GPT-4's first answers as history
  and labels from the GPT-4 judge scores when the judgements file is present.

Splits (:func:`split_by_prompt`): ``test_xdomain`` is a fixed list of held-out categories (never in
train/val/test); the rest are assigned by prompt with a fixed seed: 70 % train, 10 % val, 20 % test.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rlroute.datasets.store import DataMissing, require, resolve
from rlroute.workload.base import WorkloadError
from rlroute.workload.traces import check_split

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
DEFAULT_SPLIT_SEED = 20261125
# Whole MMLU subjects held out for cross-domain tests: one each from medicine, science, maths/stats,
# law, computing and humanities (855 prompts); chosen once, never changed, so results stay comparable.
MMLU_XDOMAIN_SUBJECTS = (
    "anatomy",
    "college_chemistry",
    "high_school_statistics",
    "international_law",
    "machine_learning",
    "world_religions",
)
DEFAULT_MODEL_MAP = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "small",
    "gpt-4-1106-preview": "large",
}


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation: user turns, the assistant replies between them (``None`` when unknown).

    Attributes:
        key: stable identity (used for caches and deterministic per-conversation draws).
        turns: user messages, in order.
        replies: assistant reply to each turn, or ``None`` where the set has none.
        category: domain (MMLU subject, ShareGPT "chat", MT-Bench category, synthetic category).
        labels: per-role correctness of the first turn ("large"/"small"), when labelled.
        system: system prompt shared by many conversations, or ``None``.
    """

    key: str
    turns: tuple[str, ...]
    replies: tuple[str | None, ...]
    category: str | None = None
    labels: Mapping[str, bool] | None = None
    system: str | None = None


@runtime_checkable
class PromptSet(Protocol):
    """A fixed, per-split sequence of conversations."""

    name: str

    def conversations(self, split: str) -> Sequence[Conversation]:
        """The split's conversations (deterministic: same split, same list)."""
        ...


def split_by_prompt(
    items: Sequence[Conversation], split: str, seed: int, xdomain: Sequence[str]
) -> list[Conversation]:
    """Select ``split``'s items: held-out categories for ``test_xdomain``, else a seeded 70/10/20 cut."""
    check_split(split)
    if split == "all":
        return list(items)
    held = set(xdomain)
    if split == "test_xdomain":
        return [c for c in items if c.category in held]
    pool = [c for c in items if c.category not in held]
    order = np.random.default_rng(seed).permutation(len(pool))
    n_train = int(round(SPLIT_FRACTIONS["train"] * len(pool)))
    n_val = int(round(SPLIT_FRACTIONS["val"] * len(pool)))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(pool))}
    lo, hi = bounds[split]
    return [pool[i] for i in sorted(order[lo:hi].tolist())]


def _parse_bool(text: str, path: str, line: int, column: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise WorkloadError(f"{path}:{line}: column {column!r} must be True or False, got {text!r}")


@lru_cache(maxsize=256)
def _read_labelled_csv(
    path: str, mtime_ns: int, on_error: str, models: tuple[str, ...]
) -> tuple[tuple[tuple[str, dict[str, bool]], ...], int]:
    """Rows ``(prompt, {model: correct})`` of one labelled CSV and the number of bad rows skipped.

    Only ``prompt`` and the ``models`` columns are read: RouteLLM publishes further columns (GSM8K's
    ``<model>_response`` texts, quoted and spanning lines), which are ignored.
    """
    rows: list[tuple[str, dict[str, bool]]] = []
    skipped = 0
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0] != "prompt" or len(header) < 2:
            raise WorkloadError(f"{path}:1: expected header 'prompt,<model>,...', got {header!r}")
        missing = [m for m in models if m not in header]
        if missing:
            raise WorkloadError(f"{path}:1: model column(s) {missing} not in header {header} "
                                "(set the prompt set's model_map to the file's column names)")
        index = {m: header.index(m) for m in models}
        end = reader.line_num
        for rec in reader:
            # Prompts span several physical lines: report the line the record starts on.
            line, end = end + 1, reader.line_num
            if not rec:
                continue
            try:
                if len(rec) != len(header):
                    raise WorkloadError(
                        f"{path}:{line}: expected {len(header)} columns {header}, got {len(rec)}"
                    )
                if not rec[0].strip():
                    raise WorkloadError(f"{path}:{line}: empty prompt")
                rows.append((rec[0], {m: _parse_bool(rec[i], path, line, m) for m, i in index.items()}))
            except WorkloadError as exc:
                if on_error == "raise":
                    raise
                skipped += 1
                log.warning("skipping bad row: %s", exc)
    if skipped:
        log.warning("%s: skipped %d bad rows", path, skipped)
    return tuple(rows), skipped


@lru_cache(maxsize=8)
def _contaminated(path: str) -> frozenset[str]:
    p = Path(path)
    if not p.is_file():
        return frozenset()
    return frozenset(
        json.loads(line)["eval_prompt"] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()
    )


class RouteLLMPrompts:
    """A RouteLLM labelled prompt set: one CSV per category (``<prefix><category>.csv``).

    Args:
        root: folder with the CSVs (relative paths resolve under the shared data folder).
        pattern: glob for the CSV files; the category is the file stem after the first ``_``.
        model_map: CSV model column -> role ("large"/"small"); columns not mapped are ignored.
        contaminated: JSONL of contaminated prompts (``eval_prompt`` field); ``None`` keeps all.
        exclude_contaminated: drop prompts listed in ``contaminated``.
        split_seed: seed of the train/val/test cut (recorded in every result via the config).
        xdomain_categories: whole categories held out as ``test_xdomain``.
        on_error: ``raise`` or ``skip`` (counted in ``self.skipped`` and logged) for bad rows.
    """

    def __init__(
        self,
        root: str = "routellm/mmlu",
        pattern: str = "mmlu_*.csv",
        model_map: Mapping[str, str] | None = None,
        contaminated: str | None = "routellm/mmlu_contaminated_prompts.jsonl",
        exclude_contaminated: bool = True,
        split_seed: int = DEFAULT_SPLIT_SEED,
        xdomain_categories: Sequence[str] = MMLU_XDOMAIN_SUBJECTS,
        on_error: str = "raise",
        name: str = "mmlu",
    ) -> None:
        self.root_arg = root
        self.root = resolve(root, pattern)
        self.pattern = pattern
        self.model_map = dict(model_map or DEFAULT_MODEL_MAP)
        self.contaminated = str(resolve(contaminated)) if contaminated else None
        self.exclude_contaminated = exclude_contaminated
        self.split_seed = int(split_seed)
        self.xdomain_categories = tuple(xdomain_categories)
        self.on_error = on_error
        self.name = name
        self.excluded = 0
        self.skipped = 0
        self._by_split: dict[str, list[Conversation]] = {}

    def _files(self) -> list[Path]:
        files = sorted(self.root.glob(self.pattern))
        if not files:
            raise DataMissing(self.root_arg, self.pattern)
        return files

    def all_conversations(self) -> list[Conversation]:
        """Every kept prompt of every file, file by file."""
        return list(self._load())

    def _load(self) -> tuple[Conversation, ...]:
        out: list[Conversation] = []
        bad = (
            _contaminated(self.contaminated)
            if (self.contaminated and self.exclude_contaminated)
            else frozenset()
        )
        self.excluded = 0
        self.skipped = 0
        for f in self._files():
            category = f.stem.split("_", 1)[1] if "_" in f.stem else f.stem
            rows, skipped = _read_labelled_csv(str(f), f.stat().st_mtime_ns, self.on_error,
                                               tuple(self.model_map))
            self.skipped += skipped
            for i, (prompt, cols) in enumerate(rows):
                if prompt in bad:
                    self.excluded += 1
                    continue
                labels = {role: cols[m] for m, role in self.model_map.items()}
                out.append(Conversation(f"{self.name}/{category}/{i}", (prompt,), (None,), category, labels))
        return tuple(out)

    def conversations(self, split: str = "all") -> list[Conversation]:
        """The split's prompts (see :func:`split_by_prompt`); memoised per split."""
        if split not in self._by_split:
            self._by_split[split] = split_by_prompt(
                self._load(), split, self.split_seed, self.xdomain_categories
            )
        return self._by_split[split]


_TURN_RE = re.compile(
    r"### (User|Assistant A):\n(.*?)(?=\n\n### (?:User|Assistant A):\n|\n\n<\|The End of)", re.S
)


class MTBenchPrompts:
    """MT-Bench's two-turn questions (FastChat llm_judge, via RouteLLM).

    The first answer shown as history in turn 2 is ``reply_model``'s, parsed from the GPT-4 judge
    prompts in the judgements file; labels (first turn) are ``score >= label_threshold`` per role.

    Args:
        questions: ``mt_bench_question.jsonl``.
        judgements: ``mt_bench_judgements.jsonl`` or ``None``.
        model_map: judged model -> role.
        reply_model: whose answers fill the history.
        label_threshold: judge score (1-10) counted as an acceptable answer (an assumption).
        xdomain_categories: categories held out as ``test_xdomain``.
    """

    def __init__(
        self,
        questions: str = "routellm/mt_bench_question.jsonl",
        judgements: str | None = "routellm/mt_bench_judgements.jsonl",
        model_map: Mapping[str, str] | None = None,
        reply_model: str = "gpt-4-1106-preview",
        label_threshold: float = 8.0,
        split_seed: int = DEFAULT_SPLIT_SEED,
        xdomain_categories: Sequence[str] = ("coding", "extraction"),
        name: str = "mt_bench",
    ) -> None:
        self.questions_arg = questions
        self.questions = resolve(questions)
        self.judgements = resolve(judgements) if judgements else None
        self.model_map = dict(model_map or DEFAULT_MODEL_MAP)
        self.reply_model = reply_model
        self.label_threshold = float(label_threshold)
        self.split_seed = int(split_seed)
        self.xdomain_categories = tuple(xdomain_categories)
        self.name = name
        self._by_split: dict[str, list[Conversation]] = {}

    def _judged(self) -> tuple[dict[int, str], dict[int, dict[str, bool]]]:
        replies: dict[int, str] = {}
        labels: dict[int, dict[str, bool]] = {}
        if self.judgements is None or not self.judgements.is_file():
            return replies, labels
        for n, line in enumerate(self.judgements.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                qid, model, turn, score = int(d["question_id"]), d["model"], int(d["turn"]), float(d["score"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise WorkloadError(f"{self.judgements}:{n}: bad judgement record ({exc!r})") from exc
            if model == self.reply_model and turn == 2:
                turns = _TURN_RE.findall(d.get("user_prompt", ""))
                answers = [text for who, text in turns if who == "Assistant A"]
                if answers:
                    replies[qid] = answers[0]
            if turn == 1 and model in self.model_map:
                labels.setdefault(qid, {})[self.model_map[model]] = score >= self.label_threshold
        return replies, labels

    def _load(self) -> list[Conversation]:
        self.questions = require(self.questions_arg)
        replies, labels = self._judged()
        out = []
        for n, line in enumerate(self.questions.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                qid, turns, cat = int(d["question_id"]), tuple(str(t) for t in d["turns"]), str(d["category"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise WorkloadError(
                    f"{self.questions}:{n}: expected question_id, turns (list) and category ({exc!r})"
                ) from exc
            reps: tuple[str | None, ...] = (replies.get(qid),) + (None,) * (len(turns) - 1)
            lab = labels.get(qid)
            full = lab if lab is not None and set(lab) == {"large", "small"} else None
            out.append(Conversation(f"{self.name}/{qid}", turns, reps, cat, full))
        return out

    def conversations(self, split: str = "all") -> list[Conversation]:
        """The split's questions; memoised per split."""
        if split not in self._by_split:
            self._by_split[split] = split_by_prompt(
                self._load(), split, self.split_seed, self.xdomain_categories
            )
        return self._by_split[split]
