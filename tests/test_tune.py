"""``rlroute tune``: a 2 x 2 grid (seed x agent) of tiny trials on a local Ray instance with 2 CPUs; every
trial an ordinary run folder that ``rlroute eval runs=[...]`` can aggregate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlroute.train.tune import eval_commands, trial_name, trial_overrides

REPO = Path(__file__).resolve().parents[1]
TINY = ["experiment=tiny", "agent.total_timesteps=128", "agent.n_envs=2", "agent.algo.n_steps=64",
        "episode_length=32", "agent.eval.freq=64"]


def run_tune(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """``rlroute tune`` on the tiny setting with a local Ray of 2 CPUs, in a subprocess; asserts it exits 0."""
    cmd = [sys.executable, "-m", "rlroute.cli", "tune", *TINY, "tune.num_cpus=2", *overrides]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1100,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_grid_trials_names_and_eval_commands() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"tune": {"grid": {"scenario": ["token_api", "budgeted"], "seed": [0, 1], "agent": ["ppo"]}}})
    trials = trial_overrides(cfg)
    assert len(trials) == 4 and {"scenario": "budgeted", "seed": 1, "agent": "ppo"} in trials
    assert trial_name({"scenario": "token_api", "seed": 1, "agent.algo.learning_rate": 3e-4}) == \
        "scenario-token_api+seed-1+learning_rate-0.0003"
    rows = [{"params": t, "status": "done", "run_dir": f"/r/{trial_name(t)}"} for t in trials]
    cmds = eval_commands(rows)
    assert len(cmds) == 2 and cmds[0].startswith("rlroute eval runs=[/r/scenario-budgeted+seed-0+agent-ppo,"
                                                 "/r/scenario-budgeted+seed-1+agent-ppo]")
    with pytest.raises(ValueError, match="tune.grid.seed must list at least one value"):
        trial_overrides(OmegaConf.create({"tune": {"grid": {"seed": []}}}))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_local_ray_grid_of_tiny_trials(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune", reason="Ray is the `ray` extra: pip install -e '.[ray]'")
    out = tmp_path / "sweeps"
    proc = run_tune(tmp_path, "tune.name=grid", "tune.grid.seed=[0,1]", "tune.grid.agent=[ppo,maskable_ppo]",
                    f"tune.out={out}")
    sweep = json.loads((out / "grid" / "sweep.json").read_text())
    trials = sweep["trials"]
    assert sorted((t["params"]["seed"], t["params"]["agent"]) for t in trials) == [
        (0, "maskable_ppo"), (0, "ppo"), (1, "maskable_ppo"), (1, "ppo")]
    assert all(t["status"] == "done" and t["timesteps"] == 128 for t in trials), trials
    for t in trials:
        run = Path(t["run_dir"])
        assert run.parent == out / "grid"
        assert {"config.yaml", "model.zip", "vecnormalize.pkl", "metrics.json"} <= {p.name for p in run.iterdir()}
        assert json.loads((run / "metrics.json").read_text())["objective"] == pytest.approx(t["best_val_reward"])
    assert "rlroute eval runs=[" in proc.stdout and "seed-0+agent-ppo" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_local_ray_optuna_search_with_asha(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune", reason="Ray is the `ray` extra: pip install -e '.[ray]'")
    pytest.importorskip("optuna", reason="Optuna is in the `ray` extra: pip install -e '.[ray]'")
    out = tmp_path / "sweeps"
    run_tune(tmp_path, "agent.total_timesteps=256", "tune.name=tpe", "tune.search=optuna", "tune.num_samples=4",
             "tune.asha.grace_period=1",
             "tune.space={agent.algo.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-3}, "
             "agent.algo.n_epochs: {type: choice, values: [2, 3]}}",
             "tune.points_to_evaluate=[{agent.algo.learning_rate: 5.0e-4, agent.algo.ent_coef: 0.01, "
             "agent.algo.n_epochs: 2}]", f"tune.out={out}")
    sweep = json.loads((out / "tpe" / "sweep.json").read_text())
    trials = sweep["trials"]
    assert sweep["search"] == "optuna" and len(trials) == 4
    for t in trials:  # every trial sampled from the space by Optuna, trained into its own run folder
        assert 1e-4 <= t["params"]["agent.algo.learning_rate"] <= 1e-3 and t["params"]["agent.algo.n_epochs"] in (2, 3)
        assert t["status"] in ("done", "stopped early") and t["error"] is None
        files = {p.name for p in Path(t["run_dir"]).iterdir()}
        assert "config.yaml" in files and (t["status"] != "done" or "metrics.json" in files)
    assert len({t["params"]["agent.algo.learning_rate"] for t in trials}) == 4
    assert any(t["params"]["agent.algo.learning_rate"] == 5e-4 and t["params"]["agent.algo.n_epochs"] == 2
               for t in trials)  # the given point was tried, the others were Optuna's suggestions
    assert any(t["status"] == "done" for t in trials)  # ASHA lets the best rung finish
