"""Production request traces: Mooncake JSONL and the Azure LLM inference CSV.

Parsed once per process and path (``lru_cache``) into arrays; every row is validated, and a bad row
either raises :class:`~rlroute.workload.base.WorkloadError` naming the file, line and what was expected
(``on_error="raise"``, the default) or is skipped and counted (``on_error="skip"``: ``TraceData.skipped``
and a logged warning) -- never dropped silently.

Formats:
- Mooncake (kvcache-ai/Mooncake FAST'25 traces): one JSON object per line with ``timestamp`` (ms from
  the trace start), ``input_length``, ``output_length`` (tokens) and ``hash_ids`` (one id per 512-token
  prompt block, ``ceil(input_length / 512)`` of them; equal ids = equal prefixes).
- Azure LLM inference trace 2023 (Azure/AzurePublicDataset): CSV with ``TIMESTAMP``
  (``YYYY-MM-DD HH:MM:SS.fffffff``), ``ContextTokens``, ``GeneratedTokens``. It carries no prefix
  information, so every request gets its own unique blocks (no cross-request cache reuse).

Splits are time windows of the trace (:data:`SPLIT_WINDOWS`): train = first 70 %, val = next 10 %,
test = last 20 % of the rows; a trace has no "domain", so ``test_xdomain`` is the test window.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rlroute.datasets.store import require
from rlroute.workload.base import WorkloadError

log = logging.getLogger(__name__)

MOONCAKE_BLOCK_SIZE = 512
# Azure rows have no prefix ids; ids for their (unique) blocks start here so they never collide with
# Mooncake's small integer ids or each other.
_AZURE_ID_BASE = 1 << 40

SPLIT_WINDOWS: dict[str, tuple[float, float]] = {
    "all": (0.0, 1.0),
    "train": (0.0, 0.7),
    "val": (0.7, 0.8),
    "test": (0.8, 1.0),
    "test_xdomain": (0.8, 1.0),
}
ON_ERROR = ("raise", "skip")


@dataclass(slots=True)
class TraceData:
    """A parsed trace: one entry per kept row, in file order (which is time order)."""

    path: str
    timestamps: npt.NDArray[np.float64]  # seconds from the first kept row
    input_len: npt.NDArray[np.int64]
    output_len: npt.NDArray[np.int64]
    blocks: list[tuple[int, ...]]
    block_size: int
    lines: npt.NDArray[np.int64]  # 1-based source line of each kept row
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # first few skip reasons, for the report
    _output_blocks: list[tuple[int, ...]] | None = None

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def output_blocks(self) -> list[tuple[int, ...]]:
        """Per row, the ids its answer's full blocks carry in the next turn (``Request.output_blocks``).

        A trace has no session ids, so the next turn is found through ``hash_ids``: the first later row
        whose prompt holds this row's full prompt blocks, continues past them and is at least as long as
        prompt + output (as a next turn re-sending the conversation is). Its blocks from this row's last
        full prompt block up to ``(input + output) // block_size`` are the answer's blocks; ``()`` when no
        such row exists (last turns, single-turn requests, prompts shorter than one block). Computed once.
        """
        if self._output_blocks is None:
            self._output_blocks = next_turn_blocks(self.blocks, self.input_len.tolist(), self.output_len.tolist(),
                                                    self.block_size)
        return self._output_blocks

    @property
    def duration(self) -> float:
        """Seconds from the first to the last row."""
        return float(self.timestamps[-1]) if len(self) else 0.0


def next_turn_blocks(blocks: list[tuple[int, ...]], inp: list[int], out: list[int], bs: int) -> list[tuple[int, ...]]:
    """See :attr:`TraceData.output_blocks`: one reverse pass, keeping the earliest later row per block id."""
    res: list[tuple[int, ...]] = [()] * len(blocks)
    latest: dict[int, int] = {}
    for i in range(len(blocks) - 1, -1, -1):
        h, nf = blocks[i], inp[i] // bs
        if nf >= 1:
            j = latest.get(h[nf - 1])
            if j is not None and inp[j] >= inp[i] + out[i] and blocks[j][:nf] == h[:nf]:
                res[i] = blocks[j][nf:min((inp[i] + out[i]) // bs, inp[j] // bs)]
        latest.update(dict.fromkeys(h, i))
    return res


def check_split(split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of :data:`SPLIT_WINDOWS`."""
    if split not in SPLIT_WINDOWS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_WINDOWS)}")


def split_window(trace: TraceData, split: str) -> tuple[int, int]:
    """Row range ``[lo, hi)`` of ``split``'s time window (by row count)."""
    check_split(split)
    a, b = SPLIT_WINDOWS[split]
    n = len(trace)
    return int(round(a * n)), int(round(b * n))


class _Rows:
    """Collects validated rows; routes each bad row to raise or skip-and-count."""

    def __init__(self, path: str, on_error: str) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.path, self.on_error = path, on_error
        self.ts: list[float] = []
        self.inp: list[int] = []
        self.out: list[int] = []
        self.blocks: list[tuple[int, ...]] = []
        self.lines: list[int] = []
        self.skipped = 0
        self.errors: list[str] = []

    def bad(self, line: int, why: str) -> None:
        msg = f"{self.path}:{line}: {why}"
        if self.on_error == "raise":
            raise WorkloadError(msg)
        self.skipped += 1
        if len(self.errors) < 20:
            self.errors.append(msg)

    def add(self, line: int, ts: float, inp: int, out: int, blocks: tuple[int, ...]) -> None:
        self.ts.append(ts)
        self.inp.append(inp)
        self.out.append(out)
        self.blocks.append(blocks)
        self.lines.append(line)

    def finish(self, block_size: int) -> TraceData:
        if not self.ts:
            raise WorkloadError(f"{self.path}: no valid rows")
        ts = np.asarray(self.ts, dtype=np.float64)
        if self.skipped:
            log.warning("%s: skipped %d bad rows (first: %s)", self.path, self.skipped, self.errors[0])
        return TraceData(
            path=self.path,
            timestamps=ts - ts[0],
            input_len=np.asarray(self.inp, dtype=np.int64),
            output_len=np.asarray(self.out, dtype=np.int64),
            blocks=self.blocks,
            block_size=block_size,
            lines=np.asarray(self.lines, dtype=np.int64),
            skipped=self.skipped,
            errors=self.errors,
        )


def _int_field(row: dict, key: str, minimum: int) -> int | str:
    """The field as an int >= minimum, or a message saying what was wrong."""
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v) or v < minimum:
        return f"field {key!r} must be an integer >= {minimum}, got {v!r}"
    return int(v)


def parse_mooncake(path: str, on_error: str = "raise") -> TraceData:
    """Parse a Mooncake JSONL trace (see module docstring for the format)."""
    rows = _Rows(path, on_error)
    last_ts = -math.inf
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.bad(line_no, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                rows.bad(line_no, f"expected a JSON object, got {type(row).__name__}")
                continue
            ts = row.get("timestamp")
            if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
                rows.bad(line_no, f"field 'timestamp' must be a number of ms >= 0, got {ts!r}")
                continue
            inp = _int_field(row, "input_length", 1)
            out = _int_field(row, "output_length", 0)
            if isinstance(inp, str) or isinstance(out, str):
                rows.bad(line_no, inp if isinstance(inp, str) else str(out))
                continue
            ids = row.get("hash_ids")
            if not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids
            ):
                rows.bad(line_no, "field 'hash_ids' must be a list of integers")
                continue
            if len(ids) != -(-inp // MOONCAKE_BLOCK_SIZE):
                rows.bad(
                    line_no,
                    f"'hash_ids' has {len(ids)} ids but input_length {inp} needs "
                    f"ceil({inp}/{MOONCAKE_BLOCK_SIZE}) = {-(-inp // MOONCAKE_BLOCK_SIZE)}",
                )
                continue
            if ts / 1000.0 < last_ts:
                rows.bad(
                    line_no, f"timestamp {ts} goes back in time (previous row at {last_ts * 1000:.0f} ms)"
                )
                continue
            last_ts = ts / 1000.0
            rows.add(line_no, last_ts, inp, out, tuple(ids))
    return rows.finish(MOONCAKE_BLOCK_SIZE)


_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def _azure_time(text: str) -> float:
    """Seconds since the epoch of ``YYYY-MM-DD HH:MM:SS[.fffffff]`` (7 fractional digits allowed)."""
    head, _, frac = text.strip().partition(".")
    base = datetime.strptime(head, "%Y-%m-%d %H:%M:%S")
    if frac and not frac.isdigit():
        raise ValueError(f"bad fractional seconds {frac!r}")
    return base.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)


def parse_azure(path: str, on_error: str = "raise") -> TraceData:
    """Parse an Azure LLM inference trace CSV; each request gets unique 512-token blocks."""
    rows = _Rows(path, on_error)
    last_ts = -math.inf
    next_id = _AZURE_ID_BASE
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != list(_AZURE_COLUMNS):
            raise WorkloadError(f"{path}:1: expected header {','.join(_AZURE_COLUMNS)}, got {header!r}")
        for rec in reader:
            line_no = reader.line_num
            if not rec:
                continue
            if len(rec) < 3:
                rows.bad(line_no, f"expected 3 columns {_AZURE_COLUMNS}, got {len(rec)}")
                continue
            try:
                ts = _azure_time(rec[0])
            except ValueError:
                rows.bad(line_no, f"TIMESTAMP must look like 'YYYY-MM-DD HH:MM:SS.fffffff', got {rec[0]!r}")
                continue
            try:
                inp, out = int(rec[1]), int(rec[2])
            except ValueError:
                rows.bad(
                    line_no, f"ContextTokens and GeneratedTokens must be integers, got {rec[1]!r}, {rec[2]!r}"
                )
                continue
            if inp < 1 or out < 0:
                rows.bad(line_no, f"need ContextTokens >= 1 and GeneratedTokens >= 0, got {inp}, {out}")
                continue
            if ts < last_ts:
                rows.bad(line_no, f"TIMESTAMP {rec[0]} goes back in time")
                continue
            last_ts = ts
            n_blocks = -(-inp // MOONCAKE_BLOCK_SIZE)
            rows.add(line_no, ts, inp, out, tuple(range(next_id, next_id + n_blocks)))
            next_id += n_blocks
    return rows.finish(MOONCAKE_BLOCK_SIZE)


@lru_cache(maxsize=16)
def _load_trace(path: str, mtime_ns: int, on_error: str) -> TraceData:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return parse_mooncake(path, on_error)
    if suffix == ".csv":
        return parse_azure(path, on_error)
    raise WorkloadError(
        f"{path}: unknown trace format {suffix!r}; expected .jsonl (Mooncake) or .csv (Azure)"
    )


def load_trace(path: str | Path, on_error: str = "raise") -> TraceData:
    """Parse a trace by extension, cached per process (re-read if the file changes)."""
    p = require(path)
    return _load_trace(str(p.resolve()), p.stat().st_mtime_ns, on_error)
