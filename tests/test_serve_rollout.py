"""Several policies in one router (rlroute/serve/rollout.py): arm assignment, exploration propensities, the
rollback rule, and through the real router over emulated workers — shadow, canary, A/B, the admin API and an
automatic rollback."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rlroute.cluster.base import InstanceState, PoolState
from rlroute.cluster.live.launch import WorkerFleet
from rlroute.policies.heuristic import SeedHeuristic
from rlroute.serve.decision import Outcome, PolicySlot
from rlroute.serve.rollout import INCUMBENT, CandidateSpec, RollbackRule, Rollout, RolloutSettings
from rlroute.types import Action, Request
from tests.fleet import four_workers
from tests.test_serve import AUTH, TOKEN, _mismatch, in_process, metric, start_router


class FixedSlot(PolicySlot):
    """A policy slot (no folder loaded) whose decisions are always ``action`` (``source``)."""

    def __init__(self, action: Action, source: str = "policy") -> None:
        super().__init__(None, 5.0, SeedHeuristic())
        self.action, self.source = action, source

    def decide(self, req: Any, state: Any, matches: Any) -> Outcome:
        return Outcome(self.action, self.source, None if self.source == "policy" else "policy_missing", 0.0)


def state(large_up: bool = True) -> Any:
    from rlroute.cluster.base import ClusterState

    pools = {"large": PoolState("large", [InstanceState(0, healthy=large_up)]),
             "small": PoolState("small", [InstanceState(0)])}
    return ClusterState(time=0.0, pools=pools)


def rollout(*specs: CandidateSpec, epsilon: float = 0.0, **rule: Any) -> Rollout:
    slots = {"large": FixedSlot(Action.LARGE), "hybrid": FixedSlot(Action.HYBRID)}
    return Rollout(RolloutSettings(list(specs), epsilon, 0, RollbackRule(**rule)),
                   lambda path: slots[path])


REQ = Request(id=0, arrival=0.0, input_len=10, output_len=4)


def test_canary_share_and_session_stickiness() -> None:
    r = rollout(CandidateSpec("c", "large", "canary", 0.2), CandidateSpec("s", "hybrid", "shadow"))
    acting = Counter(getattr(r.acting(f"req-{i}", None), "spec", None) is not None for i in range(5000))
    assert acting[True] / 5000 == pytest.approx(0.2, abs=0.02)
    per_session = {s: {r.acting(f"req-{s}-{k}", f"sess-{s}") is None for k in range(20)} for s in range(50)}
    assert all(len(v) == 1 for v in per_session.values()), "a session stays on one arm"
    assert {next(iter(v)) for v in per_session.values()} == {True, False}
    r.arms["c"].paused = True
    assert all(r.acting(f"req-{i}", None) is None for i in range(200))


def test_exploration_floor_propensities_match_the_draws() -> None:
    r = rollout(CandidateSpec("s", "large", "shadow"), epsilon=0.3)
    inc = Outcome(Action.SMALL, "policy", None, 0.0)
    got = [r.decide(REQ, f"r{i}", None, inc, state(), {}) for i in range(6000)]
    freq = Counter(int(d.outcome.action) for d in got)
    assert freq[int(Action.SMALL)] / 6000 == pytest.approx(0.7 + 0.1, abs=0.02)
    for d in got[:200]:
        a = int(d.outcome.action)
        assert d.arm == INCUMBENT
        assert d.propensity == pytest.approx(0.7 * (a == 1) + 0.1)
        assert d.arms["s"]["propensity"] == pytest.approx(0.7 * (a == 0) + 0.1), "the shadow's probability of it"
    without_large = [r.decide(REQ, f"x{i}", None, inc, state(large_up=False), {}) for i in range(500)]
    assert {int(d.outcome.action) for d in without_large} == {1}, "only allowed actions are explored"
    assert rollout().active is False and rollout(epsilon=0.1).active


def test_rollback_rule_fires_on_p99_ttft_and_on_fallback_rate() -> None:
    r = rollout(CandidateSpec("c", "large", "canary", 0.5), window=50, min_requests=20, p99_ttft_ratio=1.5,
                p99_ttft_slack_s=0.0)
    for _ in range(30):
        assert r.observe(INCUMBENT, "policy", 0.10) is None
    events = [r.observe("c", "policy", 0.12) for _ in range(19)]
    assert events == [None] * 19 and not r.arms["c"].paused, "within 1.5 x and under min_requests"
    for _ in range(30):
        event = r.observe("c", "policy", 0.5)
        if event:
            break
    assert event is not None and event["rule"] == "p99_ttft" and r.arms["c"].paused
    r2 = rollout(CandidateSpec("c", "large", "canary", 0.5), window=50, min_requests=20, fallback_rate_delta=0.1)
    for _ in range(30):
        r2.observe(INCUMBENT, "policy", 0.1)
    fired = [r2.observe("c", "fallback" if i % 3 == 0 else "policy", 0.1) for i in range(30)]
    assert any(e is not None and e["rule"] == "fallback_rate" for e in fired)
    ab = rollout(CandidateSpec("c", "large", "ab", 0.5), window=50, min_requests=5)
    for _ in range(10):
        ab.observe(INCUMBENT, "policy", 0.1)
    assert all(ab.observe("c", "fallback", 9.0) is None for _ in range(20)), "an A/B split is not rolled back"


def test_rollout_config_errors_name_the_field() -> None:
    from rlroute.serve.config import ServeConfigError, parse_config

    pools = {"large": {"workers": ["http://a:1"]}, "small": {"workers": ["http://b:1"]}}
    bad = [({"candidates": [{"name": "x", "path": "p", "mode": "blue"}]}, "mode"),
           ({"candidates": [{"name": "x", "path": "p", "mode": "canary"}]}, "share"),
           ({"candidates": [{"name": "x", "path": "p", "mode": "canary", "share": 0.7},
                            {"name": "y", "path": "p", "mode": "ab", "share": 0.7}]}, "more than 1"),
           ({"epsilon": 2}, "epsilon"), ({"rollback": {"windw": 3}}, "rollback")]
    for raw, word in bad:
        with pytest.raises(ServeConfigError, match=word):
            parse_config({"pools": pools, "rollout": raw})


# ---- through the real router over emulated workers ----------------------------------------------------------

@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFleet]:
    yield from four_workers(tmp_path_factory, 500.0)


@pytest.fixture(scope="module")
def policy() -> Path:
    """The parity bench's exported policy (committed, current feature schema: its load is checked by the bench);
    a fresh export costs minutes on a loaded host."""
    from rlroute.bench.parity import DEFAULT_POLICY

    return DEFAULT_POLICY


def gen(i: int) -> dict[str, Any]:
    return {"text": f"Request {i}: explain prefix caching briefly. " * 8, "sampling_params": {"max_new_tokens": 4}}


def test_shadow_canary_rollback_and_admin_through_the_router(fleet: WorkerFleet, policy: Path,
                                                             tmp_path: Path) -> None:
    """Incumbent = the exported policy; a shadow copy of it; a canary whose manifest names another schema (every
    one of its decisions falls back): the rule rolls the canary back on its fallback rate. Then the admin API
    adds a canary, promotes it, pauses and removes candidates; the decision log holds per-arm propensities."""
    bad = _mismatch(policy, tmp_path / "bad")
    log = tmp_path / "decisions.jsonl"
    cands = (f'[{{name: shadow1, path: "{policy}", mode: shadow}}, '
             f'{{name: bad, path: "{bad}", mode: canary, share: 0.5, sticky: request}}]')
    r = start_router(fleet, tmp_path / "router.log", f"policy.path={policy}", "ood.enabled=false",
                     f"rollout.candidates={cands}", "rollout.rollback.window=40", "rollout.rollback.min_requests=10",
                     f"decision_file.path={log}")
    try:
        arms: Counter[str] = Counter()
        with httpx.Client(timeout=30) as c:
            for i in range(80):
                resp = c.post(r.url + "/generate", json=gen(i), headers={"x-request-id": f"q{i}"})
                assert resp.status_code == 200, resp.text
                arms[resp.headers["x-rlroute-arm"]] += 1
            state = c.get(r.admin_url + "/admin/arms", headers=AUTH).json()
            assert state["candidates"]["bad"]["paused"] and state["candidates"]["bad"]["reason"] == "schema_mismatch"
            assert state["rollbacks"][0]["rule"] == "fallback_rate" and state["rollbacks"][0]["arm"] == "bad"
            assert metric(r.url, "rlroute_router_rollbacks_total", arm="bad", rule="fallback_rate") == 1
            assert 10 <= arms["bad"] < 40 and arms["shadow1"] == 0 and arms[INCUMBENT] == 80 - arms["bad"]
            tail = [c.post(r.url + "/generate", json=gen(100 + i)).headers["x-rlroute-arm"] for i in range(10)]
            assert set(tail) == {INCUMBENT}, "a rolled-back canary acts no more"
            assert metric(r.url, "rlroute_router_arm_decisions_total", arm="shadow1") == 90, "the shadow saw all"
            # admin: refused adds, then a canary that is promoted
            assert c.post(r.admin_url + "/admin/arms", json={"name": "x", "path": str(bad)}).status_code == 401
            no = c.post(r.admin_url + "/admin/arms", headers=AUTH, json={"name": "x", "path": str(bad)})
            assert no.status_code == 422 and "schema_mismatch" in no.text
            no = c.post(r.admin_url + "/admin/arms", headers=AUTH,
                        json={"name": "y", "path": str(policy), "mode": "canary", "share": 0.6})
            assert no.status_code == 422 and "share" in no.text  # bad's 0.5 is still counted (paused, not removed)
            assert c.delete(r.admin_url + "/admin/arms/bad", headers=AUTH).status_code == 200
            ok = c.post(r.admin_url + "/admin/arms", headers=AUTH,
                        json={"name": "y", "path": str(policy), "mode": "ab", "share": 0.6})
            assert ok.status_code == 200, ok.text
            acted = Counter(c.post(r.url + "/generate", json=gen(200 + i)).headers["x-rlroute-arm"] for i in range(40))
            assert acted["y"] > 10 and acted[INCUMBENT] > 5
            assert c.post(r.admin_url + "/admin/arms/y/pause", headers=AUTH).status_code == 200
            assert {c.post(r.url + "/generate", json=gen(300 + i)).headers["x-rlroute-arm"] for i in range(10)} == {INCUMBENT}
            promoted = c.post(r.admin_url + "/admin/arms/y/promote", headers=AUTH)
            assert promoted.status_code == 200 and promoted.json()["policy"]["path"] == str(policy)
            assert c.post(r.admin_url + "/admin/arms/y/pause", headers=AUTH).status_code == 404
            assert set(c.get(r.admin_url + "/admin/arms", headers=AUTH).json()["candidates"]) == {"shadow1"}
    finally:
        r.stop()
    from rlroute.serve.decisionlog import read_log

    recs = [x for x in read_log(log) if x["action"] is not None]
    assert len(recs) == 80 + 10 + 40 + 10
    first = [x for x in recs if x["request_id"].startswith("q")]
    assert all(set(x["arms"]) >= {INCUMBENT, "shadow1"} for x in first)
    for x in first:
        assert x["propensity"] == 1.0 and x["arms"][x["arm"]]["propensity"] == 1.0
        assert x["arms"]["shadow1"]["propensity"] == float(x["arms"]["shadow1"]["action"] == x["action"])
        if x["arm"] == "bad":
            assert x["source"] == "fallback" and x["reason"] == "schema_mismatch"


def test_canary_rolled_back_on_p99_ttft(fleet: WorkerFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process over the real workers: the incumbent sends everything to the small pool, the canary everything
    to the large one (slower first tokens); the p99 TTFT rule pauses the canary."""
    from rlroute.serve.app import ROUTER, create_app
    from rlroute.serve.config import parse_config

    monkeypatch.setenv("RLROUTE_ADMIN_TOKEN", TOKEN)
    cfg = parse_config({"pools": {"large": {"workers": fleet.urls("large")}, "small": {"workers": fleet.urls("small")}},
                        "speedup": 500.0, "rollout": {"rollback": {"window": 30, "min_requests": 8,
                                                                   "p99_ttft_ratio": 1.5, "p99_ttft_slack_s": 0.0}}})
    app = create_app(cfg)
    router = app[ROUTER]
    router.slot.decide = lambda *a: Outcome(Action.SMALL, "policy", None, 0.0, None, np.zeros(224, np.float32))
    router.rollout.add(CandidateSpec("slow", "all-large", "canary", 0.5, "request"), FixedSlot(Action.LARGE))

    async def run() -> list[str]:
        async with in_process(app) as c:
            return [(await c.post("/generate", json=gen(i), headers={"x-request-id": f"t{i}"})).headers["x-rlroute-arm"]
                    for i in range(60)]

    arms = asyncio.run(run())
    assert router.rollout.arms["slow"].paused and router.rollout.rollbacks[0]["rule"] == "p99_ttft"
    ev = router.rollout.rollbacks[0]
    assert ev["canary_p99_ttft_s"] > 1.5 * ev["incumbent_p99_ttft_s"]
    last = arms[arms.index("slow") + 1:] if "slow" in arms else []
    assert "slow" in arms and arms[-10:] == [INCUMBENT] * 10, last
