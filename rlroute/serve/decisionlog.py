"""The decision log: one JSONL record per routed request, written off the request path (``docs/decision_log.md``).

One schema (:data:`SCHEMA`) serves the traffic replay twin (``rlroute sim workload=replay``), policy
rollout and off-policy evaluation, and offline learning. A record is built when the router decides
(:func:`decision_record`), completed with the outcome once the answer has been sent, whole or streamed
(:func:`outcome_record`), then handed to :class:`DecisionLog`, whose bounded queue a writer thread drains
into size-rotated files — the event loop never serialises or writes. A full queue drops the record and
counts it (``rlroute_router_decision_log_records{result="dropped"}``); logging never delays, fails or
changes a request. Requests the router refuses before deciding (a malformed body: 400; over the body limit:
413) are logged too, with ``action: null`` and the error, so none is lost to the log.

Quality is **not observed in serving**: a record has ``quality_label: null``, to be joined later by
``request_id`` from an external source (human or model grading); nothing in the router fills it.

Propensity: ``propensity`` is the probability with which the executed action was drawn. Every policy the
router runs today decides deterministically (argmax of the exported policy, the fallback heuristic, a forced
action), so it is 1.0 — an estimate that reweights by it is then only unbiased for target policies that
agree with the logged one wherever they have support (see the doc page).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from rlroute.types import ACTION_NAMES, Request

log = logging.getLogger(__name__)

SCHEMA = "rlroute.decision_log/1"
"""The ``schema`` field of every record; bumped when a field changes meaning or is removed."""


class DecisionLogError(ValueError):
    """A decision log file or record does not match :data:`SCHEMA`; the message names the file, line and field."""


@dataclass(slots=True)
class DecisionLogSettings:
    """``conf/serve.yaml`` ``decision_file``: where and how much to log (off while ``path`` is None)."""

    path: str | None = None
    max_bytes: int = 64 * 1024 * 1024  # a file is rotated (path -> path.1 -> ... ) once it exceeds this
    backups: int = 4  # rotated files kept: at most (backups + 1) * max_bytes on disk
    queue_size: int = 10_000  # records waiting for the writer; beyond this a record is dropped (counted)
    observations: bool = True  # store the observation vector the policy decided on
    prompts: bool = False  # store the prompt text (off: lengths and block hashes only)


@dataclass(slots=True)
class Stage:
    """One upstream stage of a request as the worker reported it (modelled seconds; hybrid has two)."""

    pool: str
    worker: str
    ttft_s: float
    e2e_s: float
    tpot_s: float
    queue_s: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    cost: float


def decision_record(req: Request, request_id: str, action: int | None, source: str, reason: str | None,
                    obs: np.ndarray | None, policy: str | None, feature_schema: str | None,
                    settings: DecisionLogSettings, endpoint: str, arm: str = "incumbent",
                    arms: dict[str, Any] | None = None) -> dict[str, Any]:
    """The decision part of a record (the outcome is added by :func:`outcome_record`)."""
    return {
        "schema": SCHEMA,
        "ts": time.time(),
        "arrival_s": req.arrival,
        "request_id": request_id,
        "decision_id": req.id,
        "endpoint": endpoint,
        "session": req.session_id,
        "turn": req.turn,
        "input_len": req.input_len,
        "max_new_tokens": req.max_new_tokens if req.max_new_tokens is not None else req.output_len,
        "block_size": req.block_size,
        "blocks": list(req.blocks),
        "prompt": req.prompt if settings.prompts else None,
        "feature_schema": feature_schema,
        "obs": obs if settings.observations and obs is not None else None,
        "action": action,
        "action_name": ACTION_NAMES[action] if action is not None else None,
        "source": source,
        "reason": reason,
        "policy": policy,
        "arm": arm,
        "propensity": 1.0 if action is not None else None,
        "arms": arms or {},
        "outcome": None,
        "quality_label": None,
    }


def outcome_record(status: int, stages: Sequence[Stage], slo: dict[str, float], router_e2e_s: float,
                   error: str | None = None) -> dict[str, Any]:
    """The outcome of a request from its stages: TTFT is the first token of the final answer counted from the
    first stage's arrival at its worker (a hybrid's plan, then its answer, as the simulator counts it), e2e
    the stages' sum, tokens and cost summed, SLO met when TTFT and the answer's TPOT are within ``slo``."""
    out: dict[str, Any] = {"status": status, "error": error, "router_e2e_s": router_e2e_s,
                           "stages": [_stage_json(s) for s in stages]}
    if not stages:
        return {**out, "ttft_s": None, "e2e_s": None, "tpot_s": None, "queue_s": None, "prompt_tokens": None,
                "cached_tokens": None, "output_tokens": None, "plan_tokens": None, "cost": None, "slo_ok": None,
                "pool": None}
    last = stages[-1]
    before = sum(s.e2e_s for s in stages[:-1])
    ttft = before + last.ttft_s
    slo_ok = ttft <= slo.get("ttft_s", float("inf")) and last.tpot_s <= slo.get("tpot_s", float("inf"))
    return {**out, "ttft_s": ttft, "e2e_s": before + last.e2e_s, "tpot_s": last.tpot_s,
            "queue_s": sum(s.queue_s for s in stages), "prompt_tokens": sum(s.prompt_tokens for s in stages),
            "cached_tokens": sum(s.cached_tokens for s in stages), "output_tokens": last.output_tokens,
            "plan_tokens": sum(s.output_tokens for s in stages[:-1]), "cost": sum(s.cost for s in stages),
            "slo_ok": bool(slo_ok), "pool": last.pool}


def _stage_json(s: Stage) -> dict[str, Any]:
    return {"pool": s.pool, "worker": s.worker, "ttft_s": s.ttft_s, "e2e_s": s.e2e_s, "tpot_s": s.tpot_s,
            "queue_s": s.queue_s, "prompt_tokens": s.prompt_tokens, "cached_tokens": s.cached_tokens,
            "output_tokens": s.output_tokens, "cost": s.cost}


class DecisionLog:
    """A bounded queue and one writer thread appending records to ``settings.path`` with size rotation.

    Nothing starts at construction; :meth:`start` opens the file and starts the thread, :meth:`close` drains
    the queue, flushes and joins. ``written``, ``dropped`` and ``errors`` count records.
    """

    def __init__(self, settings: DecisionLogSettings) -> None:
        if not settings.path:
            raise ValueError("decision_file.path: expected a file path for the decision log")
        self.settings = settings
        self.path = Path(settings.path)
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=settings.queue_size)
        self.written = self.dropped = self.errors = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open (append) the log file and start the writer thread."""
        if self._thread is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="rlroute-decision-log", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue one record without waiting; False (and counted in ``dropped``) when the queue is full."""
        try:
            self.queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the writer (idempotent)."""
        if self._thread is None:
            return
        self.queue.put(None)
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        fh = self.path.open("ab")
        size = fh.tell()
        try:
            while True:
                rec = self.queue.get()
                if rec is None:
                    break
                try:
                    line = orjson.dumps(rec, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)
                except (TypeError, ValueError) as e:  # a record that cannot be serialised is counted, not fatal
                    self.errors += 1
                    log.warning("decision log: record %s not written (%s)", rec.get("request_id"), e)
                    continue
                if size and size + len(line) > self.settings.max_bytes:
                    fh.close()
                    self._rotate()
                    fh = self.path.open("ab")
                    size = 0
                fh.write(line)
                size += len(line)
                self.written += 1
                if self.queue.empty():
                    fh.flush()
        finally:
            fh.close()

    def _rotate(self) -> None:
        """path -> path.1 -> ... -> path.<backups>; the oldest is deleted (0 backups: the file starts over)."""
        n = self.settings.backups
        if n == 0:
            self.path.unlink(missing_ok=True)
            return
        Path(f"{self.path}.{n}").unlink(missing_ok=True)
        for i in range(n - 1, 0, -1):
            src = Path(f"{self.path}.{i}")
            if src.exists():
                os.replace(src, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")


def log_files(path: str | Path) -> list[Path]:
    """The log's files oldest first: the rotated ``path.N`` ... ``path.1``, then ``path``."""
    p = Path(path)
    rotated = sorted((q for q in p.parent.glob(p.name + ".*") if q.suffix[1:].isdigit()),
                     key=lambda q: -int(q.suffix[1:]))
    return [*rotated, p] if p.exists() else rotated


REQUIRED = ("schema", "arrival_s", "request_id", "input_len", "max_new_tokens", "block_size", "blocks", "action",
            "outcome")


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every record of the log at ``path`` (rotated files included, oldest first).

    Raises:
        DecisionLogError: no such log, a line that is not JSON, another schema, or a missing field — naming
            the file and line.
    """
    files = log_files(path)
    if not files:
        raise DecisionLogError(f"{path}: no decision log there (nor rotated files {Path(path).name}.N)")
    for f in files:
        with f.open("rb") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise DecisionLogError(f"{f}:{n}: not valid JSON ({e})") from e
                if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
                    got = rec.get("schema") if isinstance(rec, dict) else type(rec).__name__
                    raise DecisionLogError(f"{f}:{n}: expected a record with schema {SCHEMA!r}, got {got!r}")
                missing = [k for k in REQUIRED if k not in rec]
                if missing:
                    raise DecisionLogError(f"{f}:{n}: record lacks field(s) {missing} of {SCHEMA}")
                yield rec
