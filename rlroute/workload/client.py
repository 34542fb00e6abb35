"""What a client sends for a workload request: the one text path of training and serving (feature schema v4).

A router sees only the body a client sends, so the env computes a workload request's features from that
same body (:mod:`rlroute.features.text`), and every client that replays a workload against live pools
(:mod:`rlroute.bench.replay`, ``rlroute bench parity``) sends exactly it (:func:`client_body`).

The text (:func:`client_text`) is **filler standing for the context known only by its length and prefix
blocks, followed by the prompt text the workload has**:

- prompt sets (synthetic, ShareGPT, MMLU, MT-Bench): no filler; the text is ``Request.prompt``, the whole
  conversation with the newest message last;
- a trace joined with a prompt set (``prefix: trace``, ``mmlu_mooncake``): filler for the trace's context
  (``Request.context_tokens``), then the prompt set's question as the newest message;
- timing-only traces (Mooncake, Azure): filler for the whole prompt (``input_len``).

Filler: block ``h`` of ``Request.blocks`` becomes ``block_size * 4`` characters repeating ``h`` in 16 hex
digits, so equal leading blocks are equal leading text (the prefix reuse that the emulated worker's, the
router's and sglang-router's caches key on) and 4 ASCII bytes are one pseudo-token
(:data:`rlroute.worker.tokens.BYTES_PER_TOKEN`), so the context's length is exact; context past the blocks
(none for the shipped traces) repeats ``r`` + the request id in 15 hex digits (unique to the request).
Filler is ASCII, so its characters are its bytes, and the text's pseudo-token count is
``context + count_tokens(prompt)`` (:func:`client_tokens`) without building the text.

The text features read only the text's last characters (:func:`client_tail`, built without the ~50 KB of
filler a long context stands for): that bounds the env's and the router's cost alike.
"""

from __future__ import annotations

from typing import Any

from rlroute.types import Request
from rlroute.worker.tokens import BYTES_PER_TOKEN, count_tokens

SESSION_HEADER = "x-rlroute-session"  # a client's conversation id: the router counts its turns from it
_MASK64 = (1 << 64) - 1


def filler_tokens(req: Request) -> int:
    """Tokens of context the client stands for with filler: ``req.context_tokens``, or all of ``input_len``
    for a request with neither prompt text nor token ids (a timing-only trace)."""
    if req.prompt is None and req.token_ids is None:
        return req.input_len
    return req.context_tokens


def filler(req: Request, start: int, stop: int) -> str:
    """Characters ``[start, stop)`` of the request's filler (see the module docstring)."""
    chunk = req.block_size * BYTES_PER_TOKEN
    covered = len(req.blocks) * chunk
    parts = []
    pos = start
    while pos < min(stop, covered):
        i = pos // chunk
        end = min(stop, (i + 1) * chunk)
        off = (pos - i * chunk) % 16
        parts.append((f"{int(req.blocks[i]) & _MASK64:016x}" * ((end - pos + off) // 16 + 1))[off : off + end - pos])
        pos = end
    if pos < stop:
        off = (pos - covered) % 16
        parts.append((f"r{req.id & _MASK64:015x}" * ((stop - pos + off) // 16 + 1))[off : off + stop - pos])
    return "".join(parts)


def client_text(req: Request) -> str:
    """The whole text a client sends for ``req``: filler for its context, then its prompt text."""
    n = filler_tokens(req) * BYTES_PER_TOKEN
    return filler(req, 0, n) + (req.prompt or "")


def client_tail(req: Request, chars: int) -> str:
    """``client_text(req)[-chars:]``, built without the rest of the filler."""
    prompt = req.prompt or ""
    if len(prompt) >= chars:
        return prompt[-chars:] if chars > 0 else ""
    n = filler_tokens(req) * BYTES_PER_TOKEN
    if n == 0:  # no filler (every request a router builds from a body): the prompt itself, not a copy
        return prompt
    return filler(req, max(0, n - (chars - len(prompt))), n) + prompt


def client_tokens(req: Request) -> int:
    """Pseudo-tokens of what the client sends (:func:`rlroute.worker.tokens.count_tokens` of
    :func:`client_text`, by arithmetic: the filler is ``BYTES_PER_TOKEN`` ASCII bytes per token), or the
    number of token ids for a client that sends ids only."""
    if req.prompt is None and req.token_ids is not None:
        return len(req.token_ids)
    return filler_tokens(req) + (count_tokens(req.prompt) if req.prompt else 0)


def client_body(req: Request, cap: int | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The SGLang ``/generate`` body and headers a client sends for ``req``: :func:`client_text`, the
    output cap (``cap``, default the client's ``max_new_tokens``, else the reply's length) and, for a
    request of a multi-turn session, its session as :data:`SESSION_HEADER` (the router counts the turn
    from it, as the workload numbers turns)."""
    max_new = cap if cap is not None else int(req.max_new_tokens or req.output_len)
    body = {"text": client_text(req), "sampling_params": {"max_new_tokens": max_new}}
    return body, ({SESSION_HEADER: f"s{req.session_id}"} if req.session_id is not None else {})
