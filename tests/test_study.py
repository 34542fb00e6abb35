"""The study runner end to end on a tiny scenario (seconds), the results schema, and domain randomisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from rlroute.env.build import default_config
from rlroute.paths import CONF_DIR
from rlroute.study import runner
from rlroute.study.cli import run_study
from rlroute.study.randomise import RandomisedEnv


def _tiny_study(tmp_path: Path) -> object:
    study = OmegaConf.load(CONF_DIR / "study.yaml")
    study.pop("hydra")
    study.builtin = {"tiny": ["experiment=tiny"]}
    study.scenarios = ["tiny"]
    study.overrides = ["workload.prompts.pool_size=200"]
    study.regimes = {"dedicated": []}
    study.train_seeds, study.test_windows, study.episode_length, study.eval_freq = 2, 2, 32, 256
    study.val_seeds, study.threshold_shares, study.n_boot = [1000], [0.3], 200
    study.threshold_kwargs = {"max_train_requests": 300, "cache_dir": str(tmp_path / "cache")}
    study.nonlearned, study.competitors = ["all_small", "all_large", "threshold"], ["no_such_router"]
    study.references = ["quality_oracle"]
    study.served = {"enabled": True, "n_calib": 200, "n_verify": 200, "calibrate": True}
    study.out, study.runs_dir = str(tmp_path), str(tmp_path / "runs")
    return study


def best_baseline(entry: dict) -> str:  # type: ignore[type-arg]
    return str(entry["paired"]["learned_minus_best_nonlearned"]["baseline"])


def test_study_runs_end_to_end_and_writes_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "SCENARIO_DIR", tmp_path / "no_scenarios")  # use `builtin`, whatever main has
    results = run_study(_tiny_study(tmp_path), "rlroute study (test)")  # type: ignore[arg-type]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["commands"] == ["rlroute study (test)"] and on_disk["scenarios"].keys() == {"tiny"}
    for key in ("commit", "schema_hash", "sim_config_hash"):
        assert isinstance(on_disk[key], str) and on_disk[key]
    entry = results["scenarios"]["tiny"]
    ppo = entry["policies"]["ppo"]
    assert len(ppo["per_seed"]) == 2 and np.array(ppo["per_run"]).shape == (2, 2)
    assert ppo["per_seed"] == pytest.approx(np.mean(ppo["per_run"], axis=0).tolist())  # mean of training seeds
    assert set(entry["policies"]) == {"ppo", "ppo_served", "ppo_calibrated", "all_small", "all_large", "threshold",
                                      "quality_oracle"}
    tuned = entry["policies"]["ppo_calibrated"]  # the served export, its large share tuned on val
    assert tuned["role"] == "learned" and np.array(tuned["per_run"]).shape == (2, 2)
    assert [t["split"] for t in tuned["action_bias_tuning"]] == ["val", "val"]
    assert all(t["chosen"] in t["grid"] and 0.0 in t["grid"] and t["chosen_fallback"] in t["fallbacks"]
               for t in tuned["action_bias_tuning"])
    assert entry["paired"]["ppo_calibrated_minus_best_nonlearned"]["baseline"] == best_baseline(entry)
    served = entry["policies"]["ppo_served"]  # each run exported and decided through the router's guard
    assert served["role"] == "learned" and np.array(served["per_run"]).shape == (2, 2)
    assert 0.0 <= served["metrics"]["fallback_rate"]["mean"] <= 1.0
    assert served["metrics"]["ood_rate"]["mean"] <= served["metrics"]["fallback_rate"]["mean"]
    calibration = served["guard_calibration"]  # per run: thresholds fitted and checked on validation halves
    assert len(calibration) == 2 and all(c["split"].endswith("calib_obs.npy") for c in calibration)
    assert all(0.0 <= c["fpr_holdout"] <= 1.0 for c in calibration)
    assert entry["paired"]["ppo_served_minus_best_nonlearned"]["baseline"] == best_baseline(entry)
    assert entry["policies"]["threshold"]["tuned_large_share"] == 0.3
    assert entry["policies"]["all_small"]["apgr"]["mean"] is None  # no score: one operating point
    best = entry["paired"]["learned_minus_best_nonlearned"]
    assert best["baseline"] in ("all_small", "all_large", "threshold") and {"mean", "lo", "hi"} <= set(best)
    assert set(entry["paired"]["learned_minus"]) == {"ppo_served", "ppo_calibrated", "all_small", "all_large",
                                                     "threshold", "quality_oracle"}
    assert entry["skipped"] == {"no_such_router": pytest.approx(entry["skipped"]["no_such_router"])}
    assert entry["gap_recovered"]["reward_oracle"] is None or "reward_oracle" in entry["policies"]
    assert entry["gap_recovered"]["note"]
    assert entry["decisions_per_window"] == [32, 32]
    for name in ("tiny.md", "tiny_pareto.png", "tiny_mix.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_warm_started_study_shares_the_teacher_and_keeps_threshold_within_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "SCENARIO_DIR", tmp_path / "no_scenarios")
    study = _tiny_study(tmp_path)
    study.train_seeds, study.test_windows = 1, 2
    study.threshold_shares = [0.1, 0.3, 0.5]
    study.nonlearned, study.competitors, study.references = ["all_small", "threshold"], ["supervised"], []
    study.served.enabled = False  # type: ignore[attr-defined]
    study.overrides = [*study.overrides, "agent.warm_start.teacher=supervised", "+budget.large_share=0.25"]
    results = run_study(study, "rlroute study (test)")  # type: ignore[arg-type]
    entry = results["scenarios"]["tiny"]
    teacher = tmp_path / "runs" / "tiny" / "supervised.pt"
    assert teacher.is_file() and entry["policies"]["supervised"]["model"] == str(teacher)
    training = entry["policies"]["ppo"]["training"]
    assert training["warm_start"][0]["warm_start/states"] > 0 and training["best_step"][0] is not None
    thr = entry["policies"]["threshold"]
    assert thr["tuned_large_share"] <= 0.25 and set(thr["val_reward_by_share"]) == {0.1, 0.25}

    # A re-run reuses the teacher trained for the same config; a changed scenario retrains it.
    from rlroute.policies.supervised import SupervisedRouter

    class Retrained(Exception):
        pass

    def refuse(self: SupervisedRouter, cfg: object) -> None:
        raise Retrained

    monkeypatch.setattr(SupervisedRouter, "prepare", refuse)
    before = teacher.stat().st_mtime_ns
    assert runner.teacher_model(runner.compose(study, ["experiment=tiny"]), teacher.parent) == teacher  # type: ignore[arg-type]
    assert teacher.stat().st_mtime_ns == before
    with pytest.raises(Retrained):
        runner.teacher_model(runner.compose(study, ["experiment=tiny", "workload.rate=7"]), teacher.parent)  # type: ignore[arg-type]


def test_length_cut_is_tuned_on_val_and_kept_within_the_budget(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "SCENARIO_DIR", tmp_path / "no_scenarios")
    study = _tiny_study(tmp_path)
    study.length_cuts = [64, 4096]
    cfg = runner.compose(study, ["experiment=tiny"])  # type: ignore[arg-type]
    policy, extra = runner.tuned_length_cut(cfg, study)  # type: ignore[arg-type]
    scores, shares = extra["val_reward_by_cut"], extra["val_large_share_by_cut"]
    assert set(scores) == {"short@64", "long@64", "short@4096", "long@4096"}
    best = max(scores, key=lambda k: scores[k])
    assert f"{policy.large_when}@{int(policy.cut_tokens)}" == best
    assert (extra["tuned_cut_tokens"], extra["tuned_large_when"]) == (policy.cut_tokens, policy.large_when)
    assert shares["long@4096"] <= shares["long@64"] and shares["short@64"] <= shares["short@4096"]
    for cap in (min(shares.values()), min(shares.values()) / 2):  # one rule fits the budget / none does
        with_budget = runner.compose(study, ["experiment=tiny", f"+budget.large_share={cap}"])  # type: ignore[arg-type]
        policy, extra = runner.tuned_length_cut(with_budget, study)  # type: ignore[arg-type]
        # within the budget when any rule is, else the rule with the smallest share (never a better-scoring one over it)
        assert extra["val_large_share_by_cut"][f"{policy.large_when}@{int(policy.cut_tokens)}"] == min(shares.values())


def test_sim_config_hash_covers_the_profile_files_the_pools_name(tmp_path: Path) -> None:
    from omegaconf import open_dict

    from rlroute.cluster.profiles import resolve_profile_path

    cfg = default_config([])
    src = resolve_profile_path(str(cfg.cluster.pools.large.profile))
    copy = tmp_path / "large.yaml"
    copy.write_bytes(src.read_bytes())
    with open_dict(cfg):
        cfg.cluster.pools.large.profile = str(copy)
    before = runner.sim_config_hash(cfg)
    assert runner.sim_config_hash(cfg) == before  # the same files, the same hash
    copy.write_text(src.read_text() + "\n# refitted\n")  # the same config, another profile file
    assert runner.sim_config_hash(cfg) != before


def test_reuse_runs_keeps_a_trained_run_only_with_the_config_it_was_trained_with(tmp_path: Path) -> None:
    from omegaconf import open_dict

    from rlroute.train.envs import plain_cfg

    run_dir = tmp_path / "seed0"
    run_dir.mkdir()
    cfg = default_config(["seed=0"])
    assert not runner.reused_run(cfg, run_dir)  # nothing trained there yet
    saved = cfg.copy()
    with open_dict(saved):
        saved.out_dir = str(run_dir.resolve())
    OmegaConf.save(OmegaConf.create(plain_cfg(saved)), run_dir / "config.yaml")  # as train_run saves it
    (run_dir / "model.zip").write_bytes(b"")
    assert runner.reused_run(cfg, run_dir)
    other = default_config(["seed=1"])
    with pytest.raises(ValueError, match=r"keys \['seed'\] differ"):
        runner.reused_run(other, run_dir)


def test_unknown_scenario_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "SCENARIO_DIR", tmp_path / "no_scenarios")
    study = _tiny_study(tmp_path)
    study.scenarios = ["nowhere"]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="nowhere"):
        runner.scenario_overrides(study)  # type: ignore[arg-type]
    study.scenarios, study.regimes = ["tiny"], {"dedicated": [], "colocated": ["cluster=colocated"]}  # type: ignore[attr-defined]
    assert runner.scenario_overrides(study) == {  # type: ignore[arg-type]
        "tiny": ["experiment=tiny"], "tiny+colocated": ["experiment=tiny", "cluster=colocated"]}
    study.builtin["tiny2"] = ["experiment=tiny", "workload.rate=7"]  # type: ignore[attr-defined]
    study.scenarios = ["tiny", "tiny2"]  # type: ignore[attr-defined]
    # regime-major: a run cut short keeps whole regimes
    assert list(runner.scenario_overrides(study)) == [  # type: ignore[arg-type]
        "tiny", "tiny2", "tiny+colocated", "tiny2+colocated"]
    study.regimes = {"colocated": ["cluster=colocated"]}  # type: ignore[attr-defined]
    assert list(runner.scenario_overrides(study)) == ["tiny+colocated", "tiny2+colocated"]  # type: ignore[arg-type]


def test_domain_randomisation_draws_load_pools_and_prices() -> None:
    members = [default_config(["episode_length=16"]), default_config(["episode_length=16", "workload.rate=5"])]
    env = RandomisedEnv(members, "train", rate_scale=(0.5, 1.5), instances={"large": [1, 3], "small": [4]},
                        cost_scale=(0.5, 2.0), seed=3)
    drawn = []
    for k in range(12):
        obs, info = env.reset(seed=k if k == 0 else None)
        assert env.observation_space.contains(obs)
        dr = info["dr"]
        base = [20.0, 5.0][dr["member"]]
        assert 0.5 * base <= dr["rate"] <= 1.5 * base and 75.0 <= dr["cost_weight"] <= 300.0
        state = env.decision_context().state
        assert len(state.pools["large"].instances) == dr["instances"]["large"]
        env.step(1)
        drawn.append((dr["member"], dr["instances"]["large"]))
    assert {m for m, _ in drawn} == {0, 1} and {n for _, n in drawn} == {1, 3}
    with pytest.raises(ValueError, match="rate_scale"):
        RandomisedEnv(members, rate_scale=(2.0, 1.0))
    env.close()


def test_domain_randomisation_trains_with_the_training_reward_and_validates_with_the_members_own() -> None:
    from rlroute.study.randomise import RandomisedBuilder

    members = [default_config(["episode_length=16", "agent.quality_baseline=small"])]
    builder = RandomisedBuilder(members, {"cost_scale": [1.0, 1.0]})
    train, val = builder(members[0], "train"), builder(members[0], "val")
    for env in (train, val):
        env.reset(seed=0)
    assert train._env.reward_cfg.quality_baseline == "small"
    assert val._env.reward_cfg.quality_baseline == "none"
    train.close()
    val.close()


def test_records_carry_each_requests_own_reward_summing_to_the_return() -> None:
    from rlroute.eval.run import evaluate

    cfg = default_config(["experiment=tiny", "episode_length=32", "workload.prompts.pool_size=200"])
    res = evaluate("all_small", cfg, "test", [0, 1], reference_cost={}, windows=2)
    for seed, m in zip((0, 1), res.per_seed, strict=True):
        rewards = [r["reward"] for r in res.records if r["seed"] == seed]
        assert len(rewards) == 32 and sum(rewards) == pytest.approx(m["return"], rel=1e-9, abs=1e-9)


def test_leave_one_workload_out_trains_on_the_others_and_tests_on_the_held_out(tmp_path: Path) -> None:
    study = _tiny_study(tmp_path)
    study.mode, study.train_seeds = "lowo", 1  # type: ignore[attr-defined]
    study.nonlearned, study.competitors, study.references = ["all_small"], [], []  # type: ignore[attr-defined]
    study.overrides = []  # type: ignore[attr-defined]
    small = ["experiment=tiny", "workload.prompts.pool_size=200"]
    study.lowo = {"members": {"bursty": small, "calm": [*small, "workload.rate=5"],  # type: ignore[attr-defined]
                              "absent": ["experiment=tiny", "workload=azure_code",
                                         "workload.path=/nonexistent/trace.csv"]},
                  "held_out": ["calm"]}
    study.dr = {"rate_scale": [0.5, 1.5], "cost_scale": [1.0, 1.0], "instances": {}}  # type: ignore[attr-defined]
    results = run_study(study, "rlroute study mode=lowo (test)")  # type: ignore[arg-type]
    entry = results["scenarios"]["lowo_calm"]
    assert entry["trained_on"] == ["bursty"] and "ood_note" not in entry
    # the guard was calibrated on the training member's validation only; its rate on the held-out one
    assert entry["ood_fallback_rate"] == entry["policies"]["ppo_served"]["metrics"]["fallback_rate"]
    assert 0.0 <= entry["ood_fallback_rate"]["mean"] <= 1.0
    assert "absent" in results["skipped_members"] and results["mode"] == "lowo"
    assert set(entry["policies"]) == {"ppo", "ppo_served", "ppo_calibrated", "all_small"}
    # the served export's large share tuned on the held-out member's val split, as a rule would be
    assert [t["split"] for t in entry["policies"]["ppo_calibrated"]["action_bias_tuning"]] == ["val"]
    assert (tmp_path / "lowo" / "results.json").is_file()


def _runs(name: str, role: str, rows: list[list[float]]) -> object:
    import math

    from rlroute.eval.run import EvalResult
    from rlroute.eval.stats import Interval
    from rlroute.study.results import PolicyRuns

    def result(row: list[float]) -> EvalResult:
        recs = [{"seed": i, "request_id": 0, "action": 1, "ok_large": True, "ok_small": False, "ok_hybrid": False,
                 "score": math.nan} for i in range(len(row))]
        per_seed = [{k: v for k in ("reward", "quality", "cost_saving", "mix_large", "mix_hybrid", "strong_share",
                                    "ttft_p99", "slo_attainment", "cache_hit_rate")} for v in row]
        return EvalResult(name, "test", recs, per_seed, {"pgr": Interval(0.0, 0.0, 0.0, 1)})

    return PolicyRuns(name, role, [result(r) for r in rows])


def test_gap_recovered_needs_an_oracle_that_bounds_every_run_on_every_window() -> None:
    from rlroute.study.results import scenario_entry

    ppo = _runs("ppo", "learned", [[0.6, 0.7, 0.8], [0.6, 0.7, 0.8]])
    base = _runs("all_small", "nonlearned", [[0.5, 0.6, 0.7]])
    good = _runs("reward_oracle", "reference", [[0.7, 0.8, 0.9]])
    entry = scenario_entry([ppo, base, good], n_boot=200)  # type: ignore[list-item]
    assert entry["gap_recovered"]["reward_oracle"] == pytest.approx(0.5)  # (0.7 - 0.6) / (0.8 - 0.6)
    assert entry["paired"]["learned_minus_best_nonlearned"]["mean"] == pytest.approx(0.1)
    bad = _runs("reward_oracle", "reference", [[0.7, 0.65, 0.9]])  # ppo beats it on window 1
    entry = scenario_entry([ppo, base, bad], n_boot=200)  # type: ignore[list-item]
    assert entry["gap_recovered"]["reward_oracle"] is None and "not an upper bound" in entry["gap_recovered"]["note"]


def test_budgeted_scenario_picks_the_best_baseline_within_the_budget() -> None:
    from rlroute.study.results import scenario_entry

    def with_share(runs: object, share: float) -> object:
        for res in runs.runs:  # type: ignore[attr-defined]
            for m in res.per_seed:
                m["strong_share"] = share
        return runs

    ppo = with_share(_runs("ppo", "learned", [[0.6, 0.7, 0.8], [0.6, 0.7, 0.8]]), 0.2)
    small = with_share(_runs("all_small", "nonlearned", [[0.5, 0.6, 0.7]]), 0.0)
    large = with_share(_runs("all_large", "nonlearned", [[0.9, 0.9, 0.9]]), 1.0)  # best reward, over budget
    entry = scenario_entry([ppo, small, large], n_boot=200)  # type: ignore[list-item]
    assert entry["paired"]["learned_minus_best_nonlearned"]["baseline"] == "all_large"
    entry = scenario_entry([ppo, small, large], n_boot=200, budget_share=0.2)  # type: ignore[list-item]
    assert entry["paired"]["learned_minus_best_nonlearned"]["baseline"] == "all_small"
    assert entry["paired"]["learned_minus_best_nonlearned"]["mean"] == pytest.approx(0.1)
    assert entry["budget"]["over_budget"] == ["all_large"]
    assert entry["policies"]["ppo"]["within_budget"] and not entry["policies"]["all_large"]["within_budget"]
    over = with_share(_runs("ppo", "learned", [[0.6, 0.7, 0.8]]), 0.5)
    entry = scenario_entry([over, small, large], n_boot=200, budget_share=0.2)  # type: ignore[list-item]
    assert "ppo exceeds the large-model budget" in entry["gap_recovered"]["note"]
    # An oracle over the budget scores best because the reward does not charge the budget: no reference.
    oracle = with_share(_runs("reward_oracle", "reference", [[0.95, 0.95, 0.95]]), 1.0)
    entry = scenario_entry([ppo, small, large, oracle], n_boot=200)  # type: ignore[list-item]
    assert entry["gap_recovered"]["reward_oracle"] is not None
    entry = scenario_entry([ppo, small, large, oracle], n_boot=200, budget_share=0.2)  # type: ignore[list-item]
    assert entry["gap_recovered"]["reward_oracle"] is None
    assert "reward_oracle exceeds the large-model budget" in entry["gap_recovered"]["note"]


def test_parallel_study_processes_fill_one_results_file(tmp_path: Path) -> None:
    base = {"commit": "abc", "schema_hash": "s", "mode": "scenarios", "pilot": False, "settings": {"k": 1},
            "commands": ["rlroute study scenarios=[a]"], "sim_config_hash": "ha",
            "scenarios": {"a": {"sim_config_hash": "ha", "seconds": {}}}}
    runner.merged(base, tmp_path / "results.json")  # no file: unchanged
    (tmp_path / "results.json").write_text(json.dumps(base))
    other = {**base, "commands": ["rlroute study scenarios=[b]"], "sim_config_hash": "hb", "settings": {"k": 2},
             "scenarios": {"b": {"sim_config_hash": "hb", "seconds": {}}}}
    both = runner.merged(other, tmp_path / "results.json")
    assert both["scenarios"].keys() == {"a", "b"}
    assert both["commands"] == ["rlroute study scenarios=[a]", "rlroute study scenarios=[b]"]
    assert both["sim_config_hash"] not in ("ha", "hb")  # one hash over both scenarios' configs
    stale = {**other, "commit": "def"}  # another commit: a different study, not merged, but kept aside
    assert runner.merged(stale, tmp_path / "results.json")["scenarios"].keys() == {"b"}
    assert json.loads((tmp_path / "results.abc.json").read_text())["scenarios"].keys() == {"a"}


def test_a_study_s_own_outputs_do_not_make_the_commit_dirty(tmp_path: Path) -> None:
    """Run 4 lost entries this way: a second process started after the first had written results into the
    (tracked) output folder recorded `<commit>-dirty`, so its write replaced the first one's results."""
    out = runner.REPO / "experiments" / "scenarios"
    probe = out / f".probe-{tmp_path.name}.json"
    before = runner.git_commit(out)
    if before == "unknown":
        pytest.skip("not a git checkout")
    probe.write_text("{}")
    try:
        assert runner.git_commit(out) == before
        assert runner.git_commit() == before.removesuffix("-dirty") + "-dirty"
        assert runner.git_commit(tmp_path) == runner.git_commit()  # outputs outside the checkout: plain status
    finally:
        probe.unlink()


@pytest.mark.slow  # ~1-5 min: loads every latent member's data and fits six calibrations
@pytest.mark.data
def test_leave_one_workload_out_latent_members_share_one_quality_calibration(shared_data: Path) -> None:
    """A request's success probabilities must not depend on which member it is sampled in (conf/study.yaml
    ``lowo.members``); under the latent model's per-workload default they do."""
    import itertools

    from hydra.utils import instantiate

    from rlroute.eval.baselines import compose

    study = OmegaConf.load(CONF_DIR / "study.yaml")
    latent = {n: [str(o) for o in ov] for n, ov in study.lowo.members.items() if "quality=labelled" not in ov}
    assert len(latent) >= 2
    requests = list(itertools.islice(instantiate(compose(["workload=sharegpt"]).workload, split="train")
                                     .requests(np.random.default_rng(0)), 20))
    shared = {n: [instantiate(compose(ov).quality).probs(r) for r in requests] for n, ov in latent.items()}
    first = next(iter(shared.values()))
    assert all(p == first for p in shared.values())
    own = [instantiate(compose([o for o in ov if not o.startswith("quality.reference")]).quality).probs(requests[0])
           for ov in latent.values()]
    assert len(set(own)) == len(own)  # each workload's own calibration: a different P(ok) for the same request
