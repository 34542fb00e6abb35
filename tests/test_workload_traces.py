"""Trace loaders (Mooncake JSONL, Azure CSV): counts on the shared data, splits, rescaling, bad rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlroute.workload.base import WorkloadError
from rlroute.workload.compose import TraceWorkload
from rlroute.workload.traces import load_trace, parse_azure, parse_mooncake, split_window

MOONCAKE = "mooncake/conversation_trace.jsonl"
AZURE = "azure_llm/AzureLLMInferenceTrace_code.csv"


@pytest.mark.data
@pytest.mark.parametrize(("path", "count", "span"), [(MOONCAKE, 12031, 3537.0), (AZURE, 8819, 3436.0)])
def test_trace_counts_on_shared_data(shared_data: Path, path: str, count: int, span: float) -> None:
    w = TraceWorkload(str(shared_data / path))
    reqs = list(w.requests(np.random.default_rng(0)))
    assert len(reqs) == count
    assert w.skipped == 0
    assert reqs[-1].arrival == pytest.approx(span, abs=1.0)
    assert all(a.arrival <= b.arrival for a, b in zip(reqs, reqs[1:], strict=False))
    assert all(len(r.blocks) == -(-r.input_len // 512) and r.block_size == 512 for r in reqs)


@pytest.mark.data
def test_mooncake_keeps_prefix_ids(shared_data: Path) -> None:
    reqs = list(TraceWorkload(str(shared_data / MOONCAKE), max_requests=3).requests(np.random.default_rng(0)))
    assert reqs[0].blocks[:3] == (0, 1, 2) and reqs[1].blocks[:2] == (0, 14)
    assert (reqs[0].input_len, reqs[0].output_len) == (6758, 500)


@pytest.mark.data
@pytest.mark.parametrize("path", [MOONCAKE, AZURE])
def test_split_windows_partition_the_trace(shared_data: Path, path: str) -> None:
    tr = load_trace(shared_data / path)
    windows = [split_window(tr, s) for s in ("train", "val", "test")]
    assert windows[0][0] == 0 and windows[-1][1] == len(tr)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))
    n_test = sum(
        1 for _ in TraceWorkload(str(shared_data / path), split="test").requests(np.random.default_rng(0))
    )
    assert n_test == windows[2][1] - windows[2][0]


@pytest.mark.data
@pytest.mark.parametrize("rate", [1.0, 10.0])
def test_rescale_to_target_rate(shared_data: Path, rate: float) -> None:
    reqs = list(TraceWorkload(str(shared_data / MOONCAKE), rate=rate).requests(np.random.default_rng(0)))
    assert len(reqs) / reqs[-1].arrival == pytest.approx(rate, rel=0.01)


@pytest.mark.data
def test_random_start_wraps_and_is_seeded(shared_data: Path) -> None:
    w = TraceWorkload(str(shared_data / MOONCAKE), random_start=True, split="val")
    a = [(r.arrival, r.blocks) for r in w.requests(np.random.default_rng(3))]
    b = [(r.arrival, r.blocks) for r in w.requests(np.random.default_rng(3))]
    c = [(r.arrival, r.blocks) for r in w.requests(np.random.default_rng(4))]
    assert a == b and a != c
    assert len(a) == 1203 and all(x[0] <= y[0] for x, y in zip(a, a[1:], strict=False))


GOOD_MC = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}'


@pytest.mark.parametrize(
    ("bad", "expect"),
    [
        ("{not json", "not valid JSON"),
        ('{"timestamp": 5, "input_length": 600, "output_length": 5}', "'hash_ids'"),
        ('{"timestamp": 5, "input_length": -3, "output_length": 5, "hash_ids": []}', "'input_length'"),
        ('{"timestamp": 5, "input_length": 600, "output_length": 5, "hash_ids": [0]}', "needs ceil"),
        ('{"timestamp": "x", "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}', "'timestamp'"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_mooncake_bad_row_names_file_and_line(tmp_path: Path, bad: str, expect: str) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join([GOOD_MC, GOOD_MC, bad, GOOD_MC]) + "\n")
    with pytest.raises(WorkloadError, match=rf"t\.jsonl:3: .*{expect}"):
        parse_mooncake(str(f))
    skipped = parse_mooncake(str(f), on_error="skip")
    assert len(skipped) == 3 and skipped.skipped == 1 and "t.jsonl:3" in skipped.errors[0]


def test_mooncake_time_goes_backwards(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    late = GOOD_MC.replace('"timestamp": 0', '"timestamp": 9000')
    f.write_text("\n".join([late, GOOD_MC]) + "\n")
    with pytest.raises(WorkloadError, match=r"t\.jsonl:2: .*back in time"):
        parse_mooncake(str(f))


@pytest.mark.parametrize(
    ("bad", "expect"),
    [
        ("2023-11-16 18:17:05.1,abc,3", "must be integers"),
        ("yesterday,10,3", "TIMESTAMP must look like"),
        ("2023-11-16 18:17:05.1,10", "expected 3 columns"),
        ("2023-11-16 18:17:05.1,0,3", "ContextTokens >= 1"),
    ],
)
def test_azure_bad_row(tmp_path: Path, bad: str, expect: str) -> None:
    f = tmp_path / "a.csv"
    rows = [
        "TIMESTAMP,ContextTokens,GeneratedTokens",
        "2023-11-16 18:17:03.9799600,4808,10",
        bad,
        "2023-11-16 18:17:06.0000000,100,1",
    ]
    f.write_text("\n".join(rows) + "\n")
    with pytest.raises(WorkloadError, match=rf"a\.csv:3: .*{expect}"):
        parse_azure(str(f))
    tr = parse_azure(str(f), on_error="skip")
    assert len(tr) == 2 and tr.skipped == 1
    assert tr.timestamps[1] == pytest.approx(2.02004, abs=1e-6)  # 7 fractional digits are kept
    assert set(tr.blocks[0]).isdisjoint(tr.blocks[1])  # no prefix info: unique blocks


def test_azure_bad_header(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("time,ctx,gen\n1,2,3\n")
    with pytest.raises(WorkloadError, match=r"a\.csv:1: expected header"):
        parse_azure(str(f))


def test_skip_mode_is_reported_by_workload(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join([GOOD_MC, "oops", GOOD_MC]) + "\n")
    w = TraceWorkload(str(f), on_error="skip")
    assert len(list(w.requests(np.random.default_rng(0)))) == 2
    assert w.skipped == 1
