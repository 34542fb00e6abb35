"""What a client sent -> the :class:`~rlroute.types.Request` the decision path sees (the router's one text path).

No tokeniser runs here (tokenising a 2k-token prompt costs ~3 ms): the prompt length is pseudo-tokens of
the text's UTF-8 bytes, prefix blocks are chained hashes of those bytes (or of the ids a client sends),
the cap is the client's ``max_new_tokens`` / ``max_tokens``, the turn is the chat's earlier assistant
messages or, when the client names a session (``x-rlroute-session``), the requests of that session seen
before. Training builds the same request block from the same inputs: a workload request's features are
those of the body a client sends for it (:mod:`rlroute.workload.client`, read by ``rlroute.features.text``),
and ``rlroute bench parity`` feeds the simulator requests built here, so both sides see the same requests.
"""

from __future__ import annotations

import hashlib

from rlroute.types import Request
from rlroute.worker.tokens import count_tokens, id_blocks, text_blocks

MAX_SESSIONS = 65536  # sessions remembered (least recently seen forgotten first)


class SessionTable:
    """Requests seen per client session, least recently seen forgotten first."""

    def __init__(self, capacity: int = MAX_SESSIONS) -> None:
        self.capacity = capacity
        self._seen: dict[int, int] = {}  # session id -> requests seen (insertion order = recency)

    @staticmethod
    def key(session: str) -> int:
        """A stable non-negative id of a session name."""
        return int.from_bytes(hashlib.blake2b(session.encode(), digest_size=8).digest(), "little") >> 1

    def turn(self, sid: int, remember: bool = True) -> int:
        """Requests of session ``sid`` seen before; ``remember`` counts this one."""
        seen = self._seen.get(sid, 0)
        if remember:
            self._seen.pop(sid, None)
            self._seen[sid] = seen + 1
            if len(self._seen) > self.capacity:
                self._seen.pop(next(iter(self._seen)))
        return seen


def client_request(rid: int, arrival: float, text: str | None, ids: list[int] | None, max_new: int,
                   block_size: int, sessions: SessionTable, session: str | None = None, turn: int | None = None,
                   remember: bool = True) -> Request:
    """The routing view of one client request (see the module docstring).

    Args:
        rid: request id.
        arrival: arrival time (cluster time).
        text: prompt text (a chat's flattened messages), or None with ``ids``.
        ids: the token ids the client sent (``/generate`` with ``input_ids``).
        max_new: the client's output cap.
        block_size: tokens per prefix block.
        sessions: the session table that counts turns.
        session: the client's session name, if it gave one.
        turn: the chat's earlier assistant messages (None for text / ids requests).
        remember: count this request in its session.
    """
    if ids is not None:
        blocks, n = id_blocks(ids, block_size), len(ids)
    else:
        blocks, n = text_blocks(text or "", block_size), count_tokens(text or "")
    sid: int | None = None
    if session is not None:
        sid = SessionTable.key(session)
        seen = sessions.turn(sid, remember)
        if turn is None:
            turn = seen
    return Request(id=rid, arrival=arrival, input_len=n, output_len=max_new, blocks=blocks, block_size=block_size,
                   prompt=text, token_ids=tuple(ids) if ids is not None else None, session_id=sid, turn=turn or 0,
                   max_new_tokens=max_new)
