"""``rlroute sim``: the Hydra runner end to end on a small built-in workload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlroute.cluster.sim.metrics import render
from rlroute.eval.simulate import simulate

CONF = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.mark.parametrize("policy", ["all_small", "random", "heuristic"])  # any registry policy
def test_sim_runs_and_writes_json(tmp_path: Path, policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.json"
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("sim", overrides=["~quality", f"sim_policy={policy}", "max_requests=150", f"out={out}"])
    summary = simulate(cfg)
    data = json.loads(out.read_text())
    assert data["overall"]["requests"] == 150 and data["run"]["sim_policy"] == policy
    assert data["overall"]["failed"] == 0 and data["overall"]["e2e_s"]["mean"] > 0
    if policy == "all_small":
        assert set(data["actions"]) == {"small"} and data["pools"]["large"]["stages_completed"] == 0
    render(summary)
    assert "token hit rate" in capsys.readouterr().out


def test_unknown_sim_policy_is_a_clear_error(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("sim", overrides=["~quality", "sim_policy=best", "max_requests=5", f"out={tmp_path / 's.json'}"])
    with pytest.raises(ValueError, match="sim_policy must be one of"):
        simulate(cfg)
