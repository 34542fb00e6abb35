"""The decision log (rlroute/serve/decisionlog.py): the writer's rotation and bounds, the reader's checks, and
the records the real router writes over emulated workers (whole, streamed, hybrid, refused)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rlroute.cluster.live.launch import WorkerFleet
from rlroute.serve.decisionlog import (
    SCHEMA,
    DecisionLog,
    DecisionLogError,
    DecisionLogSettings,
    Stage,
    log_files,
    outcome_record,
    read_log,
)
from tests.fleet import four_workers
from tests.test_serve import AUTH, TOKEN, in_process


def _rec(i: int) -> dict[str, object]:
    return {"schema": SCHEMA, "arrival_s": float(i), "request_id": f"r{i}", "input_len": 10, "max_new_tokens": 4,
            "block_size": 64, "blocks": [i], "action": 1, "outcome": None, "pad": "x" * 200}


def test_rotation_keeps_order_and_bounds_disk(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(DecisionLogSettings(path=str(path), max_bytes=1024, backups=2))
    log.start()
    for i in range(40):
        assert log.submit(_rec(i))
    log.close()
    files = log_files(path)
    assert [f.name for f in files] == ["d.jsonl.2", "d.jsonl.1", "d.jsonl"]
    assert all(f.stat().st_size <= 1024 for f in files)
    ids = [r["request_id"] for r in read_log(path)]
    assert ids == [f"r{i}" for i in range(40 - len(ids), 40)], "the newest records, oldest first, none repeated"
    assert 3 <= len(ids) < 40 and log.written == 40 and log.dropped == 0


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    log = DecisionLog(DecisionLogSettings(path=str(tmp_path / "d.jsonl"), queue_size=3))  # writer not started
    assert [log.submit(_rec(i)) for i in range(5)] == [True, True, True, False, False]
    assert log.dropped == 2


def test_reader_names_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    with pytest.raises(DecisionLogError, match="no decision log"):
        list(read_log(p))
    p.write_text(json.dumps(_rec(0)) + "\n{not json\n")
    with pytest.raises(DecisionLogError, match=r"d.jsonl:2: not valid JSON"):
        list(read_log(p))
    p.write_text(json.dumps({**_rec(0), "schema": "other/9"}) + "\n")
    with pytest.raises(DecisionLogError, match=r"d.jsonl:1: expected a record with schema"):
        list(read_log(p))
    bad = _rec(0)
    del bad["blocks"]
    p.write_text(json.dumps(bad) + "\n")
    with pytest.raises(DecisionLogError, match=r"lacks field\(s\) \['blocks'\]"):
        list(read_log(p))


def test_outcome_of_a_hybrid_counts_the_plan_before_the_answer() -> None:
    plan = Stage("large", "large-0", 0.2, 0.5, 0.01, 0.0, 100, 0, 8, 3.0)
    answer = Stage("small", "small-1", 0.1, 0.9, 0.02, 0.05, 108, 64, 40, 1.0)
    o = outcome_record(200, [plan, answer], {"ttft_s": 0.5, "tpot_s": 0.1}, 1.5)
    assert o["ttft_s"] == pytest.approx(0.6) and o["e2e_s"] == pytest.approx(1.4)
    assert (o["output_tokens"], o["plan_tokens"], o["prompt_tokens"], o["cost"]) == (40, 8, 208, 4.0)
    assert o["slo_ok"] is False and o["pool"] == "small" and len(o["stages"]) == 2
    assert outcome_record(503, [], {}, 0.0, "down")["ttft_s"] is None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFleet]:
    yield from four_workers(tmp_path_factory, 500.0)


def test_router_logs_every_request_with_its_outcome(fleet: WorkerFleet, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole, streamed and hybrid answers and a malformed body each leave one record; the observation stored
    is the one the router decided on, and the outcome is the worker's."""
    from rlroute.serve.app import ROUTER, create_app
    from rlroute.serve.config import parse_config

    monkeypatch.setenv("RLROUTE_ADMIN_TOKEN", TOKEN)
    path = tmp_path / "decisions.jsonl"
    cfg = parse_config({"pools": {"large": {"workers": fleet.urls("large")}, "small": {"workers": fleet.urls("small")}},
                        "decision_log": 100, "decision_file": {"path": str(path)}})
    app = create_app(cfg)
    gen = {"text": "Explain prefix caching in two sentences. " * 12, "sampling_params": {"max_new_tokens": 6}}

    decided: dict[int, np.ndarray] = {}

    async def run() -> list[httpx.Response]:
        async with in_process(app) as c:
            out = [await c.post("/generate", json=gen, headers={"x-request-id": "whole"}),
                   await c.post("/generate", json={**gen, "stream": True}, headers={"x-request-id": "stream"}),
                   await c.post("/generate", json=gen, headers={"x-request-id": "hybrid",
                                                                "x-rlroute-force-action": "hybrid", **AUTH}),
                   await c.post("/generate", json={"text": 3}, headers={"x-request-id": "bad"})]
            decided.update({d["id"]: d["obs"] for d in app[ROUTER].decisions or []})
            return out

    rs = asyncio.run(run())
    assert [r.status_code for r in rs] == [200, 200, 200, 400]
    recs = {r["request_id"]: r for r in read_log(path)}
    assert set(recs) == {"whole", "stream", "hybrid", "bad"}
    for rid in ("whole", "stream", "hybrid"):
        r, o = recs[rid], recs[rid]["outcome"]
        assert r["action_name"] == rs[["whole", "stream", "hybrid"].index(rid)].headers["x-rlroute-action"]
        assert r["propensity"] == 1.0 and r["quality_label"] is None and r["prompt"] is None
        assert len(r["obs"]) == 224 and r["input_len"] > 0 and r["blocks"] and r["max_new_tokens"] == 6
        assert o["status"] == 200 and o["output_tokens"] == 6 and o["e2e_s"] >= o["ttft_s"] > 0
        assert o["cost"] > 0 and isinstance(o["slo_ok"], bool)
        logged = np.asarray(r["obs"], np.float32)  # float32 written shortest-exact: read back bit for bit
        assert np.array_equal(logged, decided[r["decision_id"]]), "the vector the router decided on"
    assert [s["pool"] for s in recs["hybrid"]["outcome"]["stages"]] == ["large", "small"]
    assert recs["hybrid"]["source"] == "forced" and recs["hybrid"]["outcome"]["plan_tokens"] > 0
    bad = recs["bad"]
    assert bad["action"] is None and bad["outcome"]["status"] == 400 and "text" in bad["outcome"]["error"]
