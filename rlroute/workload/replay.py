"""The traffic replay twin's workload: a router's decision log (``docs/decision_log.md``) as a request stream.

``rlroute sim workload=replay workload.path=<log>`` sends what a deployment saw through the simulator: each
routed record becomes one request at its logged arrival (the router's clock, modelled seconds; the first
record is time 0), with its logged prompt length, the client's cap, the prompt's prefix block hashes (the
router's ``block_size``-token blocks: equal ids are equal prefixes, so the simulator's caches see the same
reuse), its session and turn, and as output the tokens the answer actually had (the cap when the request got
no answer). Records are ordered by arrival (the log is written in completion order). Requests the router
refused before deciding (``action: null``) never reached a pool and are not replayed.

What a record does not say is inferred as for traces: the answer's blocks that a later turn carries
(``Request.output_blocks``) come from the next logged request whose prompt extends this one
(:func:`rlroute.workload.traces.next_turn_blocks`; SGLang caches a finished request's tokens, so that turn
can hit them). Prompt text is absent unless the router logged it (``decision_file.prompts``); a request
without text is all context for the features. Quality is not in the log (not observed in serving).

Splits, ``rate``, ``max_requests``, ``random_start`` and test windows behave as for a trace
(:class:`rlroute.workload.arrivals.TraceArrivals`): splits are time windows of the log's rows. Request ids
are the rows' positions in the arrival-ordered log, so :class:`rlroute.policies.logged.LoggedPolicy` can
replay the logged actions (``sim_policy=logged``) to compare simulated and logged latencies, or any other
policy can be tried on the same traffic.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from rlroute.serve.decisionlog import log_files, read_log
from rlroute.types import Request
from rlroute.workload.arrivals import TraceArrivals
from rlroute.workload.base import Window, WorkloadError
from rlroute.workload.compose import split_rng
from rlroute.workload.traces import TraceData, check_split, next_turn_blocks


@dataclass(slots=True)
class ReplayLog:
    """A decision log's routed records in arrival order: the trace part and what only a log has."""

    trace: TraceData
    max_new_tokens: list[int]
    sessions: list[int | None]
    turns: list[int]
    actions: list[int]  # the action the router executed
    logged: list[dict[str, float | None]]  # the logged outcome's ttft_s / e2e_s / tpot_s / cached_tokens per row (None: no answer)
    prompts: list[str | None]
    ids: list[str]  # the records' request_id
    start_s: float = 0.0  # the first record's logged arrival (row times count from it)


def parse_log(path: str) -> ReplayLog:
    """The routed records of the log at ``path`` (rotated files included), ordered by arrival.

    Raises:
        WorkloadError: the log holds no routed record, or a record's lengths or blocks are malformed (file
            named; :class:`~rlroute.serve.decisionlog.DecisionLogError` for a record off the schema).
    """
    recs = [r for r in read_log(path) if r.get("action") is not None]
    if not recs:
        raise WorkloadError(f"{path}: the decision log holds no routed request (refused ones are not replayed)")
    recs.sort(key=lambda r: float(r["arrival_s"]))
    block_sizes = {int(r["block_size"]) for r in recs}
    if len(block_sizes) != 1:
        raise WorkloadError(f"{path}: records with different block_size {sorted(block_sizes)}; replay one router's log")
    bs = block_sizes.pop()
    inp, out, blocks, caps = [], [], [], []
    for r in recs:
        o = r["outcome"] or {}
        n, cap = int(r["input_len"]), int(r["max_new_tokens"])
        if n < 1 or cap < 1:
            raise WorkloadError(f"{path}: request {r['request_id']!r}: expected input_len >= 1 and max_new_tokens "
                                f">= 1, got {n}, {cap}")
        inp.append(n)
        caps.append(cap)
        got = o.get("output_tokens")
        out.append(max(1, min(int(got), cap)) if got is not None else cap)
        blocks.append(tuple(int(b) for b in r["blocks"]))
    ts = np.asarray([float(r["arrival_s"]) for r in recs])
    trace = TraceData(path=str(path), timestamps=ts - ts[0], input_len=np.asarray(inp, np.int64),
                      output_len=np.asarray(out, np.int64), blocks=blocks, block_size=bs,
                      lines=np.arange(1, len(recs) + 1, dtype=np.int64))
    # the router's blocks are the prompt's full blocks of bytes, and its length rounds bytes up: a length at a
    # block boundary may have one block fewer than length // block_size
    full = [min(n, len(b) * bs + bs - 1) for n, b in zip(inp, blocks, strict=True)]
    trace._output_blocks = next_turn_blocks(blocks, full, out, bs)
    return ReplayLog(trace, caps, [r.get("session") for r in recs], [int(r.get("turn") or 0) for r in recs],
                     [int(r["action"]) for r in recs],
                     [{k: (r["outcome"] or {}).get(k) for k in ("ttft_s", "e2e_s", "tpot_s", "cached_tokens")}
                      for r in recs],
                     [r.get("prompt") for r in recs], [str(r["request_id"]) for r in recs], float(ts[0]))


@lru_cache(maxsize=8)
def _cached(path: str, stamp: tuple[tuple[str, int], ...]) -> ReplayLog:
    return parse_log(path)


def load_log(path: str | Path) -> ReplayLog:
    """:func:`parse_log`, cached per process (re-read when a file of the log changes)."""
    p = str(Path(path).resolve())
    return _cached(p, tuple((str(f), f.stat().st_mtime_ns) for f in log_files(p)))


class LogArrivals(TraceArrivals):
    """:class:`~rlroute.workload.arrivals.TraceArrivals` over a decision log's arrival times."""

    @property
    def trace(self) -> TraceData:
        return load_log(self.path).trace


class ReplayWorkload:
    """A decision log replayed as a workload (module doc).

    Args:
        path: the decision log (``decision_file.path`` of the router that wrote it).
        split: time window of the log's rows (all, train 70 %, val 10 %, test 20 %).
        rate: rescale arrivals to this mean request rate (``None``: as logged).
        max_requests: stop after this many requests.
        random_start: start at a random row of the window and wrap around.
    """

    def __init__(self, path: str, split: str = "all", rate: float | None = None, max_requests: int | None = None,
                 random_start: bool = False, name: str = "replay") -> None:
        check_split(split)
        if not path:
            raise WorkloadError("workload.path: expected the decision log to replay (rlroute serve decision_file.path)")
        self.path, self.split, self.rate, self.max_requests, self.name = str(path), split, rate, max_requests, name
        self.arrival_process = LogArrivals(self.path, "raise", random_start)

    @property
    def log(self) -> ReplayLog:
        """The parsed log (cached per process)."""
        return load_log(self.path)

    def requests(self, rng: np.random.Generator, window: Window | None = None) -> Iterator[Request]:
        """The split's logged requests at their logged arrivals (``rng`` matters only with ``random_start``)."""
        lg = self.log
        tr = lg.trace
        arrivals = self.arrival_process.arrivals(split_rng(rng, self.split), self.split, self.rate, window)
        outb = tr.output_blocks
        for a in itertools.islice(arrivals, self.max_requests):
            r = a.row
            assert r is not None
            yield Request(id=r, arrival=a.time, input_len=int(tr.input_len[r]), output_len=int(tr.output_len[r]),
                          blocks=tr.blocks[r], block_size=tr.block_size, output_blocks=outb[r],
                          prompt=lg.prompts[r], session_id=lg.sessions[r], turn=lg.turns[r],
                          max_new_tokens=lg.max_new_tokens[r])
