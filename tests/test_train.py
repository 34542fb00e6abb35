"""Training end to end on the real routing env: Hydra runs, multirun, W&B offline, reload, configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = Path(os.environ.get("RLROUTE_SHARED_DATA", REPO.parent / "shared" / "data"))
RLROUTE = [sys.executable, "-m", "rlroute.cli"]
# Shrinks any experiment to a few hundred decisions (the "tiny mode" every experiment must run in).
TINY = ["agent.total_timesteps=128", "agent.n_envs=2", "agent.algo.n_steps=64", "agent.algo.batch_size=64",
        "agent.algo.n_epochs=1", "episode_length=32", "agent.eval.freq=0", "agent.eval.seeds=[1000]",
        "agent.checkpoint_freq=64", "agent.progress_bar=false"]


def cfg_of(overrides: list[str]) -> DictConfig:
    """The root config composed with ``overrides``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_cli(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``rlroute <args>`` in a subprocess with a clean environment; fails the test with its output."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp), "PYTHONUNBUFFERED": "1", **env}
    proc = subprocess.run([*RLROUTE, *args], cwd=tmp, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"rlroute {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def check_run_folder(run: Path) -> dict:
    """The files every run folder must hold, and a finite objective."""
    for name in ("model.zip", "vecnormalize.pkl", "config.yaml", "metrics.json", "last/model.zip"):
        assert (run / name).is_file(), f"{run} lacks {name}: {sorted(p.name for p in run.iterdir())}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["objective"]) and metrics["objective_key"] == "eval/reward"
    assert metrics["total_timesteps"] >= 128
    return metrics


def config_options() -> list[tuple[str, str]]:
    """Every (group, option) under conf/."""
    return sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml"))


@pytest.mark.parametrize(("group", "option"), config_options())
def test_every_config_group_option_composes(group: str, option: str) -> None:
    if group == "offline":  # rlroute train-offline's group (conf/train_offline.yaml), not the root config's
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            off = compose("train_offline", overrides=[f"offline={option}"])
        assert off.offline.name == option and off.dataset.val_fraction < 1
        return
    cfg = cfg_of([f"{group}={option}"])
    assert cfg.agent.algo._target_.endswith("PPO") and cfg.logger.name
    if group == "experiment":
        assert cfg.experiment_name == option
    elif group in ("agent", "logger"):
        assert cfg[group].name == option


def test_tiny_train_through_hydra_cli(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(["train", "experiment=tiny", "logger=csv", f"hydra.run.dir={run_dir}", *TINY[:-1]], tmp_path)
    metrics = check_run_folder(run_dir)
    assert metrics["experiment"] == "tiny" and metrics["agent"] == "ppo" and (run_dir / "checkpoints").is_dir()
    header = (run_dir / "progress.csv").read_text().splitlines()[0].split(",")
    for prefix in ("rollout/", "train/", "route/", "cluster/", "eval/"):
        assert any(k.startswith(prefix) for k in header), f"no {prefix} metric in progress.csv: {header}"
    assert "Traceback" not in proc.stderr


def test_multirun_of_two_seeds_and_aggregate(tmp_path: Path) -> None:
    from rlroute.train.compare import find_runs, learned_row, reference_costs

    run_cli(["train", "-m", "experiment=tiny", "seed=0,1", *TINY], tmp_path)
    (sweep,) = (tmp_path / "multirun" / "train" / "tiny").iterdir()  # folders named by the choices
    runs = find_runs([sweep])
    assert len(runs) == 2 and [check_run_folder(r)["seed"] for r in runs] == [0, 1]
    assert runs[0].name.endswith("ppo-seed0") and runs[1].name.endswith("ppo-seed1")
    cfg = cfg_of(["experiment=tiny", *TINY])
    row = learned_row(runs, cfg, "test", [2000, 2001], reference_costs(cfg, "test", [2000, 2001]))
    assert row.matrix("reward").shape == (2, 2) and row.values["reward"].n == 2  # [run, test seed]
    assert np.isfinite(row.values["quality"].mean) and np.isfinite(row.values["reward"].half_width)
    assert row.per_seed is not None and row.per_seed[0]["reward"] == row.matrix("reward")[:, 0].mean()


def _wandb_flushed() -> None:
    """Stop W&B's service process so the offline ``.wandb`` log is complete on disk before it is read.

    ``run.finish()`` returns once the service has the run's records; the service writes the file on its
    own schedule, and on a loaded machine it was read with only its header (a race in the test, not a
    lost record: the service flushes everything when it exits). The next ``wandb.init`` starts a new one.
    """
    import wandb

    wandb.teardown()


def test_wandb_offline_run_logs_curves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlroute.train.trainer import train_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = train_run(cfg_of(["experiment=tiny", "logger=wandb", *TINY]), tmp_path / "run")
    check_run_folder(result.run_dir)
    _wandb_flushed()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    logs = list(runs[0].glob("*.wandb")) if len(runs) == 1 else []
    assert logs, f"no offline wandb run under {tmp_path}"
    # The offline log is wandb's binary record stream: the history keys appear in it verbatim.
    blob = logs[0].read_bytes()
    for key in ("rollout/ep_rew_mean", "train/entropy_loss", "route/frac_large", "cluster/hit_rate", "eval/reward"):
        assert key.encode() in blob, f"{key} was not logged to W&B"
    assert list((runs[0] / "files" / "media" / "table").rglob("*.table.json")), "no evaluation table logged"


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_runs_in_tiny_mode(experiment: str, tmp_path: Path) -> None:
    from rlroute.train.trainer import train_run

    cfg = cfg_of([f"experiment={experiment}", *TINY])
    if cfg.get("needs_shared_data") and not SHARED_DATA.is_dir():
        pytest.skip(f"experiment {experiment} needs ../shared/data at {SHARED_DATA}")
    result = train_run(cfg, tmp_path / experiment)
    check_run_folder(result.run_dir)


@pytest.mark.parametrize("agent", ["ppo", "maskable_ppo"])
def test_saved_model_reloads_and_predicts_the_same_actions(agent: str, tmp_path: Path) -> None:
    from rlroute.env import build_env
    from rlroute.policies.sb3 import SB3Policy
    from rlroute.train.envs import load_normalize
    from rlroute.train.trainer import train_run

    cfg = cfg_of(["experiment=tiny", f"agent={agent}", *TINY])
    result = train_run(cfg, tmp_path / "run")
    live = SB3Policy.from_model(result.model, load_normalize(result.run_dir / "last" / "vecnormalize.pkl"))
    loaded = SB3Policy(result.run_dir / "last")
    assert type(loaded.model).__name__ == ("MaskablePPO" if agent == "maskable_ppo" else "PPO")
    env = build_env(cfg, split="val")
    env.reset(seed=5)
    for _ in range(48):
        ctx = env.decision_context()
        np.testing.assert_allclose(loaded.action_probs(ctx.obs), live.action_probs(ctx.obs), rtol=1e-6, atol=1e-7)
        action = loaded.act(ctx)
        assert action == live.act(ctx)
        env.step(int(action))
    env.close()


def test_sb3_policy_rejects_bad_inputs(tmp_path: Path) -> None:
    from rlroute.policies.sb3 import SB3Policy

    with pytest.raises(FileNotFoundError, match="model.zip"):
        SB3Policy(tmp_path)


def test_bench_train_reports_env_share(tmp_path: Path) -> None:
    from rlroute.bench.train import main

    out = tmp_path / "train.json"
    result = main(["--steps", "128", "--experiment", "tiny", "--out", str(out), *TINY[1:]])
    assert 0.0 <= result["value"] <= 100.0 and result["unit"].startswith("%")
    assert result["real_env_steps_per_second"] > 0 and result["trivial_env_steps_per_second"] > 0
    assert json.loads(out.read_text())["bench"] == "train"


def test_quickstart_tiny_writes_report_and_logs_to_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from rlroute.train.quickstart import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    path = run([*TINY, "logger=wandb", "quickstart.test_seeds=[2000]", "quickstart.export_verify=64"], tmp_path / "qs")
    printed = capsys.readouterr().out
    from rlroute.train.compare import BASELINES

    for line in ("[1/3] training PPO", f"[2/3] evaluating PPO + {len(BASELINES)} baselines", "[3/3] exporting to ONNX",
                 "result (reward per decision, test split, 1 seeds): PPO ", f"quickstart report: {path}"):
        assert line in " ".join(printed.split()), f"quickstart did not print {line!r}:\n{printed}"
    _wandb_flushed()
    text = path.read_text()
    assert "| ppo |" in text and "| quality_oracle |" in text and "Paired over test seeds" in text
    assert (tmp_path / "qs" / "results_test_pareto.png").stat().st_size > 0
    assert (tmp_path / "qs" / "policy" / "manifest.json").is_file(), "the policy was not exported"
    (wandb_run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list((wandb_run / "files" / "media" / "images").rglob("*.png")), "Pareto plot not logged to W&B"
    assert b"policy-quickstart-ppo-seed0" in next(wandb_run.glob("*.wandb")).read_bytes(), "policy artifact not logged"


@pytest.mark.parametrize(("logger", "pattern"), [("none", None), ("csv", "progress.csv"),
                                                 ("tensorboard", "events.out.tfevents.*")])
def test_each_logger_writes_its_files(logger: str, pattern: str | None, tmp_path: Path) -> None:
    from rlroute.train.trainer import train_run

    result = train_run(cfg_of(["experiment=tiny", f"logger={logger}", *TINY]), tmp_path / "run")
    check_run_folder(result.run_dir)
    written = sorted(p.name for p in result.run_dir.glob("*") if p.is_file())
    if pattern is None:
        assert not [n for n in written if n.startswith(("progress", "events"))], written
    else:
        assert list(result.run_dir.glob(pattern)), f"logger={logger} wrote no {pattern}: {written}"
