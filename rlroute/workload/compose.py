"""Workloads: arrival timing composed with a prompt set, and plain trace replay.

:class:`PromptWorkload` joins any :class:`~rlroute.workload.arrivals.ArrivalProcess` (Poisson, gamma,
diurnal or a real trace's timing) with any :class:`~rlroute.workload.prompts.PromptSet`. Each arrival
starts a session (a conversation); turn ``k + 1`` arrives ``output_len_k / decode_tokens_per_s`` plus an
exponential think time after turn ``k``. Turn ``k``'s prompt holds the system prompt and every earlier
turn and reply, so its prefix blocks extend turn ``k - 1``'s, as in production chat serving.

``prefix`` chooses where lengths and cache blocks come from when the timing is a trace:

- ``"prompt"`` (default): the prompt's own MiniLM token ids, chained into ``block_size``-token blocks;
  the trace only supplies arrival times.
- ``"trace"``: each trace row is one request whose context is the trace's (its ``input_length``,
  ``output_length`` and ``hash_ids`` of 512-token blocks), with the prompt set's question as the newest
  user message. ``prompt``/``token_ids`` then hold only that message; ``input_len`` is the trace's, and
  ``context_tokens`` = ``input_len`` minus the question's pseudo-tokens is the part a client stands for
  with filler (:mod:`rlroute.workload.client`), so the text it sends is exactly ``input_len`` pseudo-tokens
  long (unless the question alone is longer: 8 of MMLU's 11,447 questions exceed Mooncake's shortest prompt,
  891 tokens; then the text is the question alone).
  This keeps Mooncake's real prefix-reuse structure and load while the prompt set supplies text, category
  and labels -- the choice made for ``conf/workload/mmlu_mooncake.yaml``.

``rate`` rescales timing to a target mean *request* rate (session rate = rate / mean turns); ``None``
keeps the process's own rate or the trace's native timing. ``max_requests`` ends the stream.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rlroute.types import Request
from rlroute.worker.tokens import count_tokens
from rlroute.workload.arrivals import ArrivalProcess, TraceArrivals
from rlroute.workload.base import Window, WorkloadError
from rlroute.workload.caps import ClientCaps
from rlroute.workload.prompts import Conversation, PromptSet
from rlroute.workload.synthetic import OUTPUT_LENGTHS, LogNormal, filler
from rlroute.workload.tokens import TOKEN_ARRAY_KEY, IntArray, chain_blocks, stable_hash, token_cache
from rlroute.workload.traces import SPLIT_WINDOWS, TraceData, check_split

log = logging.getLogger(__name__)

SPLIT_IDS = {name: i for i, name in enumerate(SPLIT_WINDOWS)}
# A tokenised turn: prompt ids, their chained blocks, the known reply's tokens (-1: unknown), the prompt
# text, and the reply's blocks as the next turn carries them (Request.output_blocks; () when unknown).
Turn = tuple[IntArray, tuple[int, ...], int, str, tuple[int, ...]]
# Process-level memo of tokenised turns shared by every PromptWorkload (see PromptWorkload._tokens);
# entries are the same objects the per-instance memos hold, so sharing costs no extra memory for them.
_SHARED_TOKENS: OrderedDict[tuple[object, ...], Turn] = OrderedDict()
_SHARED_TOKEN_COUNT = 0
SHARED_MAX_TOKENS = 10_000_000
DEFAULT_OUTPUT = LogNormal(200, 0.8, 8, 2048)  # unknown replies: ShareGPT-like (assumption)


def split_rng(rng: np.random.Generator, split: str) -> np.random.Generator:
    """A child generator that differs per split, so train and test streams differ under one seed."""
    check_split(split)
    return np.random.default_rng([int(rng.integers(2**63)), SPLIT_IDS[split]])


class PromptWorkload:
    """Arrival process x prompt set (see module docstring).

    Args:
        prompts: the prompt set.
        arrivals: the arrival process (``TraceArrivals`` for trace timing).
        split: all/train/val/test/test_xdomain (selects prompts, and the trace window for trace timing).
        rate: target mean request rate (req/s), or ``None`` for the process's own.
        max_requests: stop after this many requests (``None``: as long as arrivals last).
        prefix: ``"prompt"`` or ``"trace"`` (see module docstring).
        block_size: tokens per prefix block for text prompts.
        think_time_s: mean user think time between turns (exponential; assumption).
        decode_tokens_per_s: assumed decode speed to place the next turn after a reply.
        max_turns: use at most this many turns of a conversation.
        max_context_tokens: a turn whose prompt is longer ends its session (counted in ``dropped_turns``).
        max_new_tokens: the client's token cap: an int, ``{caps, weights}`` or None for the default mix
            (:mod:`rlroute.workload.caps`); the reply is cut at it. ``session_id`` is set only for
            conversations of more than one turn.
        output_len: log-normal params ``{median, sigma, low, high}`` for replies the set does not give;
            default per category from :data:`~rlroute.workload.synthetic.OUTPUT_LENGTHS`.
        with_token_ids: attach ``token_ids`` (costs a tuple per request; blocks are always attached).
        shuffle: draw conversations in a random order (each used once before any repeats).
        name: reported name.
    """

    def __init__(
        self,
        prompts: PromptSet,
        arrivals: ArrivalProcess,
        split: str = "all",
        rate: float | None = None,
        max_requests: int | None = None,
        prefix: str = "prompt",
        block_size: int = 64,
        think_time_s: float = 20.0,
        decode_tokens_per_s: float = 50.0,
        max_turns: int | None = None,
        max_context_tokens: int = 32768,
        max_new_tokens: int | Mapping[str, Any] | None = None,
        output_len: Mapping[str, float] | None = None,
        with_token_ids: bool = True,
        shuffle: bool = True,
        name: str | None = None,
    ) -> None:
        check_split(split)
        if prefix not in ("prompt", "trace"):
            raise ValueError(f"prefix must be 'prompt' or 'trace', got {prefix!r}")
        if prefix == "trace" and not isinstance(arrivals, TraceArrivals):
            raise ValueError("prefix='trace' needs trace timing (arrivals: TraceArrivals)")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 req/s or null, got {rate}")
        self.prompts, self.arrival_process = prompts, arrivals
        self.split, self.rate, self.max_requests, self.prefix = split, rate, max_requests, prefix
        self.block_size, self.think_time_s, self.decode_tps = (
            int(block_size),
            float(think_time_s),
            float(decode_tokens_per_s),
        )
        self.max_turns, self.max_context_tokens = max_turns, int(max_context_tokens)
        self.caps = ClientCaps(max_new_tokens)
        self.output_len = LogNormal(**output_len) if output_len else None  # type: ignore[arg-type]
        self.with_token_ids, self.shuffle = with_token_ids, shuffle
        self.name = name or f"{getattr(prompts, 'name', 'prompts')}"
        self.dropped_turns = 0
        # (conversation key, turn) -> (token ids, blocks, known reply tokens or -1, prompt text); LRU,
        # bounded by total tokens so replaying a long corpus (ShareGPT) cannot exhaust memory.
        self._memo: OrderedDict[tuple[str, int], Turn] = OrderedDict()
        self._memo_tokens = 0
        self.max_memo_tokens = 10_000_000  # ~40 MB of ids + ~40 MB of prompt text at most

    # -- text assembly -------------------------------------------------------------------------------
    def _reply_text(self, conv: Conversation, j: int) -> str:
        reply = conv.replies[j] if j < len(conv.replies) else None
        if reply is not None:
            return reply
        # Unknown earlier reply (e.g. MT-Bench turn 2 without judgements): deterministic filler text.
        g = np.random.default_rng(stable_hash(f"{conv.key}/{j}"))
        return filler(g, int(self._out_dist(conv).sample(g) / 1.3))

    def _parts(self, conv: Conversation, k: int) -> list[str]:
        parts = [conv.system] if conv.system else []
        for j in range(k):
            parts += [f"User: {conv.turns[j]}", "Assistant:", self._reply_text(conv, j)]
        parts += [f"User: {conv.turns[k]}", "Assistant:"]
        return parts

    def _tokens(self, conv: Conversation, k: int) -> Turn:
        key = (conv.key, k)
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return hit
        # Another workload of the process (another env of a vector env, the quality model's reference
        # stream) may have built it: the key holds everything the result depends on.
        shared_key = (
            conv.key, k, conv.system, conv.turns[: k + 1], conv.replies[: k + 1], conv.category,
            self.block_size, self.output_len,
        )  # fmt: skip
        out = _SHARED_TOKENS.get(shared_key)
        if out is None:
            out = self._build_tokens(conv, k)
            _SHARED_TOKENS[shared_key] = out
            _SHARED_TOKENS.move_to_end(shared_key)
            global _SHARED_TOKEN_COUNT
            _SHARED_TOKEN_COUNT += int(out[0].shape[0])
            while _SHARED_TOKEN_COUNT > SHARED_MAX_TOKENS and len(_SHARED_TOKENS) > 1:
                _, old = _SHARED_TOKENS.popitem(last=False)
                _SHARED_TOKEN_COUNT -= int(old[0].shape[0])
        else:
            _SHARED_TOKENS.move_to_end(shared_key)
        self._remember(key, out)
        return out

    def _build_tokens(self, conv: Conversation, k: int) -> Turn:
        parts = self._parts(conv, k)
        reply = conv.replies[k] if k < len(conv.replies) else None
        enc = token_cache().encode(parts + ([reply] if reply is not None else []))
        ids = np.concatenate(enc[: len(parts)])
        known = int(enc[-1].shape[0]) if reply is not None else -1
        bs, n = self.block_size, int(ids.shape[0])
        out_blocks: tuple[int, ...] = ()
        if known > 0 and (n + known) // bs > n // bs:
            # turn k + 1's prompt is these ids + the reply's ids + more (see _parts): its full blocks over
            # prompt + reply are this turn's answer as the cache will hold it after this turn finishes
            seq = np.concatenate([ids, enc[-1]])[: (n + known) // bs * bs]
            out_blocks = chain_blocks(seq, bs)[n // bs:]
        return ids, chain_blocks(ids, bs), known, "\n\n".join(parts), out_blocks

    def _remember(self, key: tuple[str, int], out: Turn) -> None:
        self._memo[key] = out
        self._memo_tokens += int(out[0].shape[0])
        while self._memo_tokens > self.max_memo_tokens and len(self._memo) > 1:
            _, old = self._memo.popitem(last=False)
            self._memo_tokens -= int(old[0].shape[0])

    def _out_dist(self, conv: Conversation) -> LogNormal:
        return self.output_len or OUTPUT_LENGTHS.get(conv.category or "", DEFAULT_OUTPUT)

    # -- streaming -----------------------------------------------------------------------------------
    def _turns(self, conv: Conversation) -> int:
        n = len(conv.turns)
        return n if self.max_turns is None else min(n, self.max_turns)

    def prompt_texts(self) -> Iterator[str]:
        """Every prompt text this split can produce (each conversation's turns with their history), for
        held-out checks: the supervised router drops training decisions whose prompt a test split has."""
        for conv in self.prompts.conversations(self.split):
            for k in range(self._turns(conv)):
                yield "\n\n".join(self._parts(conv, k))

    def mean_turns(self, convs: Sequence[Conversation]) -> float:
        """Mean turns per session over (up to 256 of) the split's conversations."""
        if self.prefix == "trace":
            return 1.0
        n = min(len(convs), 256)
        return float(np.mean([self._turns(convs[i]) for i in range(n)])) if n else 1.0

    def requests(self, rng: np.random.Generator, window: Window | None = None) -> Iterator[Request]:
        """Requests in non-decreasing arrival time (deterministic given ``rng``'s state).

        ``window``: only that disjoint block of the split's conversations (and, for trace timing, that
        disjoint time window of the split's rows); see :class:`~rlroute.workload.base.Window`.
        """
        g = split_rng(rng, self.split)
        convs = self.prompts.conversations(self.split)
        if len(convs) == 0:
            raise WorkloadError(
                f"workload {self.name!r}: prompt set has no conversations for split {self.split!r}"
            )
        if window is not None:
            convs = window.take(convs, f"conversations of {self.name!r}'s {self.split!r} split")
        session_rate = self.rate / self.mean_turns(convs) if self.rate else None
        if isinstance(self.arrival_process, TraceArrivals):
            arrivals = self.arrival_process.arrivals(g, self.split, session_rate, window)
        else:
            arrivals = self.arrival_process.arrivals(g, self.split, session_rate)
        order = self._order(g, len(convs))
        trace = self.arrival_process.trace if isinstance(self.arrival_process, TraceArrivals) else None
        heap: list[tuple[float, int, int, int, int | None]] = []  # time, seq, conv index, turn, trace row
        seq = itertools.count()
        sessions = itertools.count()
        session_of: dict[int, int] = {}
        emitted = 0
        limit = self.max_requests if self.max_requests is not None else float("inf")
        arrival = next(arrivals, None)
        while emitted < limit and (heap or arrival is not None):
            if heap and (arrival is None or heap[0][0] <= arrival.time):
                t, s, ci, k, row = heapq.heappop(heap)
                req = self._request(emitted, t, convs[ci], k, row, session_of.pop(s), g, trace)
                if req is None:
                    continue
                emitted += 1
                yield req
                if k + 1 < self._turns(convs[ci]) and row is None:
                    nxt = t + req.output_len / self.decode_tps + g.exponential(self.think_time_s)
                    s2 = next(seq)
                    session_of[s2] = req.session_id  # type: ignore[assignment]
                    heapq.heappush(heap, (nxt, s2, ci, k + 1, None))
            else:
                assert arrival is not None
                s = next(seq)
                session_of[s] = next(sessions)
                heapq.heappush(
                    heap, (arrival.time, s, next(order), 0, arrival.row if self.prefix == "trace" else None)
                )
                arrival = next(arrivals, None)

    def _order(self, g: np.random.Generator, n: int) -> Iterator[int]:
        while True:
            yield from (g.permutation(n).tolist() if self.shuffle else range(n))

    def _request(
        self,
        rid: int,
        t: float,
        conv: Conversation,
        k: int,
        row: int | None,
        session: int,
        g: np.random.Generator,
        trace: TraceData | None,
    ) -> Request | None:
        ids, blocks, known_out, prompt, out_blocks = self._tokens(conv, k)
        if row is None and ids.shape[0] > self.max_context_tokens:
            self.dropped_turns += 1
            if self.dropped_turns in (1, 10, 100, 1000):
                log.info(
                    "%s: %d turns dropped for exceeding max_context_tokens=%d",
                    self.name,
                    self.dropped_turns,
                    self.max_context_tokens,
                )
            return None
        input_len, block_size, context = int(ids.shape[0]), self.block_size, 0
        if row is not None and trace is not None:
            input_len, out = int(trace.input_len[row]), int(trace.output_len[row])
            blocks, block_size = trace.blocks[row], trace.block_size
            out_blocks = trace.output_blocks[row]
            # the question is the newest message *of* the trace's prompt: the context before it is the rest
            context = max(0, input_len - count_tokens(prompt))
        else:
            out = known_out if known_out >= 0 else int(self._out_dist(conv).sample(g))
            if out != known_out:
                out_blocks = ()
        # An empty reply in the data (~0.3 % of ShareGPT turns) still costs one decode step (the EOS token);
        # a zero-length generation is not a request any engine serves. The engine stops at the client's cap.
        cap = self.caps.draw(rid, t)
        if out > cap:  # cut at the cap: the finished sequence's full blocks end earlier
            out_blocks = out_blocks[: (input_len + cap) // block_size - input_len // block_size]
        out = min(max(out, 1), cap)
        token_ids = tuple(ids.tolist()) if self.with_token_ids else None
        return Request(
            id=rid,
            arrival=t,
            input_len=input_len,
            output_len=out,
            blocks=blocks,
            block_size=block_size,
            output_blocks=out_blocks,
            prompt=prompt,
            token_ids=token_ids,
            session_id=session if row is None and self._turns(conv) > 1 else None,
            turn=k,
            category=conv.category,
            labels=dict(conv.labels) if (conv.labels is not None and k == 0) else None,
            max_new_tokens=cap,
            context_tokens=context,
            # The ids as the int32 array they came from, tagged with the tuple they equal, so feature
            # hashing skips converting ~1k Python ints (see rlroute.features.text.token_array).
            cache={TOKEN_ARRAY_KEY: (token_ids, ids)} if token_ids is not None else {},
        )


class TraceWorkload:
    """Replay of a trace (Mooncake or Azure) without text: lengths and prefix blocks from the trace.

    Args:
        path: trace file; relative paths resolve under the shared data folder.
        split: time window (train 70 % / val 10 % / test and test_xdomain 20 %; all = whole trace).
        rate: rescale timestamps to this mean request rate (``None`` keeps the trace's timing).
        max_requests: stop after this many requests.
        on_error: ``raise`` on a bad row or ``skip`` it (counted in ``skipped``, logged).
        random_start: start at a random row of the window and wrap around.
        max_new_tokens: the client's cap (int, ``{caps, weights}`` or None: :mod:`rlroute.workload.caps`);
            the trace's output length is cut at it.
    """

    def __init__(
        self,
        path: str,
        split: str = "all",
        rate: float | None = None,
        max_requests: int | None = None,
        on_error: str = "raise",
        random_start: bool = False,
        max_new_tokens: int | Mapping[str, Any] | None = None,
        name: str = "trace",
    ) -> None:
        check_split(split)
        self.arrival_process = TraceArrivals(path, on_error, random_start)
        self.split, self.rate, self.max_requests, self.name = split, rate, max_requests, name
        self.caps = ClientCaps(max_new_tokens)

    @property
    def skipped(self) -> int:
        """Bad rows skipped while parsing (``on_error="skip"``)."""
        return self.arrival_process.trace.skipped

    def requests(self, rng: np.random.Generator, window: Window | None = None) -> Iterator[Request]:
        """The split's rows as requests (``rng`` only matters with ``random_start``); ``window``: only that
        disjoint time window of them."""
        tr = self.arrival_process.trace
        g = split_rng(rng, self.split)
        arrivals = self.arrival_process.arrivals(g, self.split, self.rate, window)
        inp, outl, outb = tr.input_len.tolist(), tr.output_len.tolist(), tr.output_blocks
        for i, a in enumerate(itertools.islice(arrivals, self.max_requests)):
            r = a.row
            assert r is not None
            cap = self.caps.draw(i, a.time)
            yield Request(
                id=i,
                arrival=a.time,
                input_len=inp[r],
                output_len=max(1, min(outl[r], cap)),
                blocks=tr.blocks[r],
                block_size=tr.block_size,
                output_blocks=outb[r][: (inp[r] + cap) // tr.block_size - inp[r] // tr.block_size],
                max_new_tokens=cap,
            )
