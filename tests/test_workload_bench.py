"""``rlroute bench workload`` runs and emits its JSON contract (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlroute.bench.workload import main


def test_bench_workload_emits_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.json"
    result = main(["--workload", "synthetic", "--requests", "200", "--out", str(out)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["unit"].startswith("us/request") and last["value"] == result["value"] > 0
    row = last["workloads"][0]
    assert row["workload"] == "synthetic" and row["requests"] == 200
    assert json.loads(out.read_text())["value"] == last["value"]
