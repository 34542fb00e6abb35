"""``rlroute train-offline``: simulated decision logs, BC and CQL into the one export path, served by the router.

Tiny cases on the ``tiny`` experiment (64-decision episodes): the simulated log's rewards are the env's credits;
a CQL policy trained on it exports, and the ONNX graph's actions equal the torch actor's; the router serves
the export and decides with it (``x-rlroute-source: policy``); a corrupt or mismatched log is refused naming
the field; BC on a log of the deterministic seed heuristic repeats the rule on states of other episodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rlroute.export.graph import load_run
from rlroute.offline.dataset import from_log, reward_spec, simulate
from rlroute.offline.trainer import greedy, train_offline
from rlroute.paths import CONF_DIR
from rlroute.serve.decisionlog import DecisionLogError

TINY = ["experiment=tiny", "dataset.episodes=4", "offline.epochs=5"]


def offline_cfg(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train_offline", overrides=list(overrides))


@pytest.fixture(scope="module")
def cql_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("torchrl", reason="offline.algo=cql needs the `offline` extra: pip install 'rlroute[offline]'")
    return train_offline(offline_cfg(*TINY), tmp_path_factory.mktemp("cql"))


def test_simulated_log_scores_each_record_with_the_env_credit(tmp_path: Path) -> None:
    cfg = offline_cfg("experiment=tiny")
    out = simulate(cfg, tmp_path / "log.jsonl", 2, 0.2, 7)
    assert out["records"] == 2 * 64 and out["max_abs_reward_minus_credit"] < 1e-6  # simulate checks every record
    data = from_log(tmp_path / "log.jsonl", reward_spec(cfg.reward), 224)
    assert data.obs.shape == (128, 224) and data.obs.dtype == np.float32
    # an exploration floor of 0.2 over 3 allowed actions: 0.8 + 0.2/3 for the rule's action, 0.2/3 otherwise
    assert set(np.round(data.propensity, 6)) <= {round(0.8 + 0.2 / 3, 6), round(0.2 / 3, 6), 0.9, 0.1}
    assert (data.propensity < 0.5).any()  # the floor did move some decisions off the rule
    assert data.done[-1] and not data.done[:-1].any()
    assert np.array_equal(data.next_obs[:-1], data.obs[1:])


def test_cql_export_is_served_like_ppo_and_onnx_matches_torch(cql_run: Any) -> None:
    from rlroute.features import SCHEMA
    from rlroute.policies.onnx import OnnxPolicy

    manifest = json.loads((cql_run.export_dir / "manifest.json").read_text())
    assert manifest["feature_schema"]["hash"] == SCHEMA.hash
    assert manifest["verification"]["passed"] and "ood" in manifest  # guard from the training observations
    assert manifest["ood"]["calibration"]["split"].endswith("train_obs.npy")
    model, norm, algo = load_run(cql_run.run_dir)
    assert algo == "PPO" and norm.low is not None  # the range-clipped normalisation of PPO runs
    # observations neither trained on nor verified on: a log of other episodes
    cfg = offline_cfg(*TINY)
    simulate(cfg, cql_run.run_dir / "other.jsonl", 2, 0.5, 90_000)
    obs = from_log(cql_run.run_dir / "other.jsonl", reward_spec(cfg.reward), 224).obs
    onnx = OnnxPolicy(str(cql_run.export_dir), ood=False)
    onnx_actions = np.array([int(np.argmax(onnx.logits(x))) for x in obs])
    assert np.array_equal(onnx_actions, greedy(model, norm, obs))
    assert cql_run.metrics["train/loss_cql"] > 0 and 0.0 <= cql_run.metrics["val/agreement"] <= 1.0


@pytest.fixture()
def served(cql_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.fleet import four_workers
    from tests.test_serve import start_router

    fleet_gen = four_workers(tmp_path_factory, 500.0)
    fleet = next(fleet_gen)
    try:
        # hand-written prompts on an idle fleet are not the training distribution: the guard is off here, as in
        # test_serve.py (the guard through the router: test_serve_ood.py); the policy path is under test
        r = start_router(fleet, tmp_path_factory.mktemp("router") / "router.log",
                         f"policy.path={cql_run.export_dir}", "ood.enabled=false")
        try:
            yield r.url
        finally:
            r.stop()
    finally:
        fleet_gen.close()


def test_router_decides_with_the_offline_policy(served: str) -> None:
    from tests.test_serve import BODIES, metric

    before = metric(served, "rlroute_router_decisions_total", source="policy")
    for _ in range(4):
        r = httpx.post(served + "/generate", json=BODIES["/generate"], timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["x-rlroute-source"] == "policy", r.headers
        assert r.headers["x-rlroute-action"] in ("large", "small", "hybrid")
    assert metric(served, "rlroute_router_decisions_total", source="policy") == before + 4


def _good(dim: int = 224) -> dict[str, Any]:
    return {"schema": "rlroute.decision_log/1", "arrival_s": 0.0, "request_id": "r", "input_len": 3,
            "max_new_tokens": 4, "block_size": 64, "blocks": [], "obs": [0.0] * dim, "action": 1,
            "propensity": 1.0, "quality_label": None, "outcome": {"cost": 0.001, "e2e_s": 1.0, "slo_ok": True}}


@pytest.mark.parametrize("change,field", [
    ({"obs": [0.0] * 10}, "'obs'"),
    ({"obs": None}, "'obs'"),
    ({"action": 7}, "'action'"),
    ({"propensity": 0.0}, "'propensity'"),
    ({"feature_schema": "0" * 64}, "'feature_schema'"),
    ({"outcome": {"e2e_s": 1.0, "slo_ok": True}}, "'outcome.cost'"),
    ({"schema": "rlroute.decision_log/0"}, "schema"),
])
def test_bad_log_is_refused_naming_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    from rlroute.features import SCHEMA

    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(_good()) + "\n" + json.dumps({**_good(), **change}) + "\n")
    with pytest.raises(DecisionLogError, match=field):
        from_log(path, reward_spec(None), 224, SCHEMA.hash)


def test_log_that_is_not_json_or_has_nothing_to_learn_from(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(_good()) + "\n{not json\n")
    with pytest.raises(DecisionLogError, match=r"log.jsonl:2: not valid JSON"):
        from_log(path, reward_spec(None), 224)
    path.write_text(json.dumps({**_good(), "action": None}) + "\n")
    with pytest.raises(DecisionLogError, match="no answered record"):
        from_log(path, reward_spec(None), 224)


def test_train_offline_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="offline.algo"):
        train_offline(offline_cfg(*TINY, "offline.algo=dqn"))
    with pytest.raises(ValueError, match=r"unknown offline key\(s\) \['alpah'\]"):
        train_offline(offline_cfg(*TINY, "+offline.alpah=1"))


def test_bc_reproduces_a_deterministic_rule_on_held_out_states(tmp_path: Path) -> None:
    """The seed heuristic logged with no floor (propensity 1); states of episodes never trained on."""
    cfg = offline_cfg("experiment=tiny", "offline=bc", "dataset.episodes=48", "dataset.epsilon=0",
                      "offline.epochs=30", "export.enabled=false")
    res = train_offline(cfg, tmp_path / "bc")
    simulate(cfg, tmp_path / "held.jsonl", 4, 0.0, 50_000)
    held = from_log(tmp_path / "held.jsonl", reward_spec(cfg.reward), 224)
    assert (held.propensity == 1.0).all()
    model, norm, _ = load_run(res.run_dir)
    agree = float((greedy(model, norm, held.obs) == held.action).mean())
    majority = float(np.bincount(held.action).max() / len(held))
    assert agree >= 0.95 and agree > majority, (agree, majority)
