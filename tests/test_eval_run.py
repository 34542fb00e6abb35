"""The harness on real, small simulator runs: oracle bound, APGR anchors, report files, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rlroute.eval.baselines import compose
from rlroute.eval.cli import run_eval
from rlroute.eval.report import write_report
from rlroute.eval.run import EvalResult, all_large_costs, default_env_factory, evaluate
from rlroute.policies.registry import make_policy

SEEDS = [0, 1]
POLICIES = ["all_small", "all_large", "all_hybrid", "random", "round_robin", "heuristic", "cache_aware", "quality_oracle"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EvalResult]:
    cfg = compose(["episode_length=48"])
    env = default_env_factory(cfg, "test")
    ref = all_large_costs(cfg, "test", SEEDS, env=env)
    out = {name: evaluate(name, cfg, "test", SEEDS, reference_cost=ref, env=env) for name in POLICIES}
    threshold = make_policy("threshold", max_train_requests=300, cache_dir=str(tmp_path_factory.mktemp("cache")))
    out["threshold"] = evaluate(threshold, cfg, "test", SEEDS, reference_cost=ref, env=env)
    return out


def test_reusing_the_env_gives_the_same_episodes(results: dict[str, EvalResult]) -> None:
    cfg = compose(["episode_length=48"])
    fresh = evaluate("round_robin", cfg, "test", SEEDS, reference_cost={0: 1.0, 1: 1.0})
    keys = ("request_id", "action", "ttft", "e2e", "cost")
    assert [[r[k] for k in keys] for r in fresh.records] == [
        [r[k] for k in keys] for r in results["round_robin"].records
    ]


def test_records_cover_every_decision(results: dict[str, EvalResult]) -> None:
    for res in results.values():
        assert len(res.records) == 48 * len(SEEDS)
        assert {r["seed"] for r in res.records} == set(SEEDS)
        assert sum(r["failed"] for r in res.records) < len(res.records)  # latencies were measured
    assert all(math.isfinite(r["score"]) for r in results["threshold"].records)  # swept for APGR


def test_pgr_anchors_on_a_real_run(results: dict[str, EvalResult]) -> None:
    for m in results["all_small"].per_seed:
        assert m["pgr"] == pytest.approx(0.0) and m["mix_small"] == 1.0 and math.isnan(m["apgr"])
    for m in results["all_large"].per_seed:
        assert m["pgr"] == pytest.approx(1.0) and m["cost_saving"] == pytest.approx(0.0)
    assert results["all_small"].summary["pgr"].mean == 0.0 and results["all_large"].summary["pgr"].mean == 1.0


def test_oracle_is_an_upper_bound_at_no_more_cost(results: dict[str, EvalResult]) -> None:
    oracle = results["quality_oracle"]
    for k, m in enumerate(oracle.per_seed):
        for name, res in results.items():
            assert m["quality_drawn"] >= res.per_seed[k]["quality_drawn"] - 1e-12, name
        assert m["cost"] <= results["all_large"].per_seed[k]["cost"] + 1e-9
    assert oracle.summary["cost_saving"].mean > 0.0


def test_report_files(results: dict[str, EvalResult], tmp_path: Path) -> None:
    text = write_report(list(results.values()), tmp_path, "synthetic")
    for name in ("records.csv", "summary.json", "summary.csv", "summary.md", "pareto.png", "latency_cdf.png", "calls_quality.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| quality_oracle | test |" in text and "±" in text


def test_eval_cli_function_runs_named_policies(tmp_path: Path) -> None:
    cfg = compose(["episode_length=16", "seeds=[0]", "policies=[heuristic,all_small]"], config_name="eval")
    res = run_eval(cfg, out_dir=tmp_path)
    assert [r.policy for r in res] == ["heuristic", "all_small"]
    assert (tmp_path / "summary.md").exists()


@pytest.mark.slow  # trains two tiny PPO runs: ~15-25 s on the shared 2-core machine
def test_eval_over_training_run_folders(tmp_path: Path) -> None:
    from rlroute.train.trainer import train_run

    tiny = ["experiment=tiny", "agent.total_timesteps=64", "agent.n_envs=1", "agent.algo.n_steps=64",
            "agent.algo.batch_size=64", "agent.algo.n_epochs=1", "episode_length=32", "agent.eval.freq=0",
            "agent.checkpoint_freq=0", "agent.progress_bar=false"]
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        train_run(compose([*tiny, f"seed={seed}"]), run)
        runs.append(run)
    cfg = compose(["episode_length=16", "seeds=[0,1]", f"runs=[{runs[0]},{runs[1]}]"], config_name="eval")
    res = run_eval(cfg, out_dir=tmp_path / "eval")
    assert [r.policy for r in res] == ["ppo[run0]", "ppo[run1]", "ppo (2 runs)"]
    agg = res[-1]
    assert agg.summary["quality"].n == 2 and len(agg.records) == 2 * 2 * 16
    assert "ppo (2 runs)" in (tmp_path / "eval" / "summary.md").read_text()
