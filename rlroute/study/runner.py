"""The study runner: per scenario, train PPO over seeds, evaluate every policy on disjoint test windows,
write ``results.json``, one markdown table and two plots per scenario (``experiments/scenarios/README.md``).

Everything is driven by ``conf/study.yaml``; :func:`run_study` is plain and testable, ``rlroute study``
(:mod:`rlroute.study.cli`) is its Hydra shell. Tuning touches only ``val``: PPO keeps its best snapshot on
``val_seeds``, the threshold router's large share is the best of ``threshold_shares`` on ``val_seeds`` and the
length cut's cut and side the best of ``length_cuts`` x {short, long}.
The test split is evaluated once per (scenario, policy, training run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from rlroute.env.build import default_config
from rlroute.eval.run import EvalResult, all_large_costs, default_env_factory, evaluate
from rlroute.paths import CONF_DIR, REPO
from rlroute.policies.registry import POLICIES, make_policy
from rlroute.study.results import (
    PolicyRuns,
    markdown_table,
    plots,
    prompt_clustered_difference,
    scenario_entry,
)
from rlroute.train.budget import budget_share

log = logging.getLogger(__name__)
Builder = Callable[[DictConfig, str], Any]
SCENARIO_DIR = CONF_DIR / "scenario"


def git_commit(outputs: Path | None = None) -> str:
    """HEAD's hash, with ``-dirty`` when the working tree has uncommitted changes outside ``outputs`` (the
    study's own output folder: a study writes it as it goes, so a second process started later must not read
    the first one's results as a change of code)."""
    root = REPO
    inside = outputs is not None and Path(outputs).resolve().is_relative_to(Path(root).resolve())
    spec = ["--", ".", f":(exclude){Path(outputs).resolve()}"] if inside else []  # type: ignore[arg-type]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", *spec], cwd=root, capture_output=True, text=True,
                               check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def sim_config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved ``cluster`` config (pools, caches, cost model, events) and of the serving-profile
    files its pools name: a refitted profile changes the simulator under the same config (0731fa5 made the
    default large pool ~1 % slower between provisioned_fleet's runs 4 and 5, which recorded one hash). Covered
    since the twelfth session: hashes recorded before differ from today's for the same cluster."""
    from rlroute.cluster.profiles import ProfileError, resolve_profile_path

    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    assert isinstance(cluster, dict)
    profiles: dict[str, str] = {}
    for pool in (cluster.get("pools") or {}).values():
        name = pool.get("profile") if isinstance(pool, dict) else None
        if name:
            try:
                profiles[str(name)] = hashlib.sha256(resolve_profile_path(str(name)).read_bytes()).hexdigest()
            except ProfileError as e:  # the simulator fails on it, named, when it is built
                profiles[str(name)] = f"unresolved: {e}"
    blob = json.dumps({"cluster": cluster, "profiles": profiles}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def schema_hash(cfg: DictConfig) -> str:
    """The feature schema's hash for the config's text representation."""
    from rlroute.features.spec import build_schema

    features = cfg.get("features") or {}
    return build_schema(str(features.get("text", "hash"))).hash


def scenario_overrides(study: DictConfig) -> dict[str, list[str]]:
    """Scenario name → root-config overrides: ``conf/scenario/`` files when that group exists, else the
    ``builtin`` list. A requested name that does not exist is an error."""
    if SCENARIO_DIR.is_dir() and any(SCENARIO_DIR.glob("*.yaml")):
        root = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"))
        defaults = root.get("defaults", []) if isinstance(root, dict) else []
        in_defaults = any(isinstance(d, Mapping) and "scenario" in d for d in defaults)
        prefix = "scenario=" if in_defaults else "+scenario="
        known = {p.stem: [f"{prefix}{p.stem}"] for p in sorted(SCENARIO_DIR.glob("*.yaml"))}
        where = f"{SCENARIO_DIR}"
    else:
        known = {str(k): [str(o) for o in v] for k, v in study.builtin.items()}
        where = "study.builtin (conf/scenario/ does not exist)"
    wanted = [str(s) for s in study.scenarios] if study.get("scenarios") else list(known)
    missing = [s for s in wanted if s not in known]
    if missing:
        raise ValueError(f"study.scenarios: {missing} not found in {where}; known: {sorted(known)}")
    regimes = {str(k): [str(o) for o in v] for k, v in (study.get("regimes") or {"": []}).items()}
    if sum(not extra for extra in regimes.values()) > 1:
        raise ValueError(f"study.regimes: at most one regime may have no overrides (it keeps the scenario's "
                         f"name); got {regimes}")
    out = {}
    # Regime-major: every scenario of the first regime runs before any of the next (a run cut short keeps
    # whole regimes). The regime without overrides (the scenario's own cluster) keeps the scenario's name;
    # the others are suffixed (`token_api+colocated`), also when run alone.
    for regime, extra in regimes.items():
        for s in wanted:
            out[s if not extra else f"{s}+{regime}"] = [*known[s], *extra]
    return out


def compose(study: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The root config with ``overrides`` and ``study.overrides``, then the study's size knobs."""
    cfg = default_config([*overrides, *[str(o) for o in study.get("overrides") or []]])
    with open_dict(cfg):
        if study.get("episode_length") is not None:
            cfg.episode_length = int(study.episode_length)
            if int(cfg.agent.algo.n_steps) % cfg.episode_length:
                # Per-request credit needs rollouts that end where episodes end (rlroute/train/credit.py).
                log.info("study: agent.algo.n_steps %s -> %s (a multiple of episode_length)",
                         cfg.agent.algo.n_steps, cfg.episode_length)
                cfg.agent.algo.n_steps = cfg.episode_length
        if study.get("total_timesteps") is not None:
            cfg.agent.total_timesteps = int(study.total_timesteps)
        if study.get("eval_freq") is not None:
            cfg.agent.eval.freq = int(study.eval_freq)
        cfg.agent.eval.seeds = [int(s) for s in study.val_seeds]
        cfg.agent.progress_bar = False
        cfg.agent.checkpoint_freq = 0
    return cfg


TEACHER_KEYS = ("seed", "episode_length", "features", "workload", "quality", "cluster", "reward", "budget")


def teacher_key(cfg: DictConfig, settings: dict[str, Any]) -> str:
    """sha256 of what the supervised teacher's training depends on: the environment's config groups
    (not ``agent``: PPO's settings do not change the teacher), the feature schema and the teacher's own
    training settings."""
    from rlroute.features import build_schema

    env_part = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in TEACHER_KEYS if k in cfg}
    schema = build_schema(str(cfg.get("features", {}).get("text", "hash"))).hash  # its input features
    blob = json.dumps({"cfg": env_part, "settings": settings, "schema": schema}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def teacher_model(cfg: DictConfig, out: Path) -> Path | None:
    """With a warm-started learned policy (``agent.warm_start.teacher``), train the supervised router once
    on the scenario's train split into ``out/supervised.pt`` and point the warm start at it; the study also
    evaluates that very model as the ``supervised`` competitor. A file already there is reused when it was
    trained for the same config and settings (:func:`teacher_key`). ``None`` without a warm start."""
    from rlroute.policies.supervised import SupervisedRouter, save

    teacher = (cfg.agent.get("warm_start") or {}).get("teacher")
    if not teacher:
        return None
    path = out / "supervised.pt"
    policy = make_policy(str(teacher))
    if not isinstance(policy, SupervisedRouter):
        raise TypeError(f"agent.warm_start.teacher={teacher!r} is not a supervised router")
    key = teacher_key(cfg, asdict(policy.settings))
    if path.is_file() and SupervisedRouter(model_path=str(path)).meta.get("config_key") == key:
        log.info("study: teacher %s reused (same scenario config and training settings)", path)
    else:  # the labels are simulator forks: ~25 min of CPU on provisioned_fleet, so a re-run reuses them
        policy.prepare(cfg)
        assert policy.net is not None
        save(policy.net, {**policy.meta, "config_key": key}, path)
    with open_dict(cfg):
        cfg.agent.warm_start.teacher_path = str(path)
    return path


def train_seeds(cfg: DictConfig, study: DictConfig, out: Path, builder: Builder | None = None) -> list[Path]:
    """Train ``study.train_seeds`` PPO runs (seeds 0..n-1) into ``out/seed<k>``; returns the run folders. With
    ``study.reuse_runs`` a folder that already holds a model is kept (:func:`reused_run`)."""
    from rlroute.train.trainer import train_run

    teacher_model(cfg, out)
    runs = []
    for seed in range(int(study.train_seeds)):
        run_cfg = cfg.copy()
        with open_dict(run_cfg):
            run_cfg.seed = seed
        if study.get("reuse_runs") and reused_run(run_cfg, out / f"seed{seed}"):
            runs.append((out / f"seed{seed}").resolve())
            continue
        if builder is not None:
            result = train_run(run_cfg, out / f"seed{seed}", builder=builder)
        else:
            result = train_run(run_cfg, out / f"seed{seed}")
        runs.append(result.run_dir)
    return runs


def reused_run(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a trained model to evaluate instead of training ``cfg`` again; raises when its
    saved ``config.yaml`` differs from what training ``cfg`` there would save (the differing keys named)."""
    from rlroute.train.envs import plain_cfg

    if not (run_dir / "model.zip").is_file():
        return False
    want = cfg.copy()
    with open_dict(want):
        want.out_dir = str(run_dir.resolve())
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    now = OmegaConf.to_container(OmegaConf.create(plain_cfg(want)), resolve=False)
    assert isinstance(saved, dict) and isinstance(now, dict)
    diff = sorted(str(k) for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if diff:
        raise ValueError(f"study.reuse_runs: {run_dir} was trained with another config (keys {diff} differ); "
                         f"train it again (reuse_runs=false) or point runs_dir elsewhere")
    log.info("study: reusing the trained run %s", run_dir)
    return True


def tuned_on_val(cfg: DictConfig, study: DictConfig, candidates: Mapping[Any, Any]) -> tuple[Any, dict[Any, float],
                                                                                          dict[Any, float]]:
    """The key of ``candidates`` (key -> policy) with the best mean reward over ``val_seeds`` on ``val``, and
    every candidate's val reward and realised large share. On a budgeted scenario (``budget.large_share``) a
    candidate whose realised large share exceeds the budget is not chosen (the study counts such a policy as
    infeasible, not better); when none fits, the one with the smallest realised share is."""
    seeds = [int(s) for s in study.val_seeds]
    cap = budget_share(cfg)
    env = default_env_factory(cfg, "val")
    scores: dict[Any, float] = {}
    realised: dict[Any, float] = {}
    for key, policy in candidates.items():
        res = evaluate(policy, cfg, "val", seeds, reference_cost={}, env=env)
        scores[key] = float(np.mean([m["reward"] for m in res.per_seed]))
        realised[key] = float(np.mean([m["strong_share"] for m in res.per_seed]))
    env.close()
    feasible = [k for k in candidates if cap is None or realised[k] <= cap + 1e-9]
    best = max(feasible, key=lambda k: scores[k]) if feasible else min(candidates, key=lambda k: realised[k])
    return best, scores, realised


def tuned_threshold(cfg: DictConfig, study: DictConfig) -> tuple[Any, dict[str, Any]]:
    """The threshold router with its large share chosen on ``val`` (:func:`tuned_on_val`); on a budgeted
    scenario only the grid's shares up to the budget, plus the budget itself, compete."""
    kwargs = OmegaConf.to_container(study.get("threshold_kwargs") or OmegaConf.create({}), resolve=True)
    assert isinstance(kwargs, dict)
    cap = budget_share(cfg)
    grid = [float(s) for s in study.threshold_shares]
    if cap is not None:
        grid = sorted({*(s for s in grid if s <= cap), cap})
    routers = {share: make_policy("threshold", large_share=share, **{str(k): v for k, v in kwargs.items()})
               for share in grid}
    best, scores, realised = tuned_on_val(cfg, study, routers)
    return routers[best], {"tuned_large_share": best, "val_reward_by_share": scores,
                           "val_large_share_by_share": realised}


def tuned_length_cut(cfg: DictConfig, study: DictConfig) -> tuple[Any, dict[str, Any]]:
    """The length cut (:class:`rlroute.policies.simple.LengthCut`) with its cut and side chosen on ``val``
    (:func:`tuned_on_val`) from ``study.length_cuts`` x {short, long}."""
    from rlroute.policies.simple import LengthCut

    rules = {f"{side}@{int(c)}": LengthCut(cut_tokens=float(c), large_when=side)
             for c in study.length_cuts for side in ("short", "long")}
    best, scores, realised = tuned_on_val(cfg, study, rules)
    return rules[best], {"tuned_cut_tokens": rules[best].cut_tokens, "tuned_large_when": rules[best].large_when,
                         "val_reward_by_cut": scores, "val_large_share_by_cut": realised}


def training_facts(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """Per training run: the env step of the snapshot kept on ``val`` (0 = the warm-started policy itself,
    before any PPO update) and the warm start's facts, from each run's ``metrics.json``."""
    facts: dict[str, list[Any]] = {"best_step": [], "total_timesteps": [], "warm_start": []}
    for d in run_dirs:
        m = json.loads((Path(d) / "metrics.json").read_text()) if (Path(d) / "metrics.json").is_file() else {}
        facts["best_step"].append(m.get("best_step"))
        facts["total_timesteps"].append(m.get("total_timesteps"))
        facts["warm_start"].append(m.get("warm_start") or None)
    if not any(facts["warm_start"]):
        del facts["warm_start"]
    return {"training": facts}


def _role(study: DictConfig, name: str) -> str:
    for role, key in (("nonlearned", "nonlearned"), ("competitor", "competitors"), ("reference", "references")):
        if name in [str(n) for n in study.get(key) or []]:
            return role
    raise ValueError(f"policy {name!r} has no role in the study config")


def evaluate_scenario(
    cfg: DictConfig, study: DictConfig, run_dirs: Sequence[Path], policies: Sequence[str],
    tick: Callable[[str], None] = lambda _: None, trained_on: Sequence[DictConfig] | None = None,
) -> tuple[list[PolicyRuns], dict[str, str]]:
    """Every policy (and each learned run) on the test windows of ``cfg``; skipped policies with reasons.

    With ``study.served.enabled`` each learned run is also exported and evaluated as the router serves it
    (``<learned>_served``, :mod:`rlroute.study.served`), its guard calibrated on validation observations of
    ``trained_on`` (default: ``cfg`` itself); with ``study.served.calibrate`` also with its large share
    and guard fallback calibrated to ``cfg``'s val split (``<learned>_calibrated``, :mod:`rlroute.export.bias`)."""
    from rlroute.export.bias import tune_action_bias
    from rlroute.policies.sb3 import SB3Policy
    from rlroute.study.served import CALIBRATED_DIR, export_served, guard_facts, served_policy

    n = int(study.test_windows)
    seeds = list(range(n))
    env = default_env_factory(cfg, "test")
    reference = all_large_costs(cfg, "test", seeds, env=env, windows=n)

    def run(policy: Any) -> EvalResult:
        return evaluate(policy, cfg, "test", seeds, reference_cost=reference, env=env, windows=n)

    learned = str(study.learned)
    out = [PolicyRuns(learned, "learned", [run(SB3Policy(d, name=learned)) for d in run_dirs],
                      extra=training_facts(run_dirs))]
    tick(learned)
    served = study.get("served")
    if served is not None and served.get("enabled"):
        name = f"{learned}_served"
        folders = [export_served(Path(d), list(trained_on or [cfg]), int(served["n_calib"]), int(served["n_verify"]))
                   for d in run_dirs]
        out.append(PolicyRuns(name, "learned", [run(served_policy(f, name)) for f in folders],
                              note="the exported policy as rlroute serve runs it: OOD guard on, seed heuristic "
                                   "deciding what it refuses", extra=guard_facts(folders)))
        tick(name)
        if served.get("calibrate"):
            name = f"{learned}_calibrated"
            calibrated = [Path(f).with_name(CALIBRATED_DIR) for f in folders]
            tuned = [tune_action_bias(f, cfg, c, "val", [int(s) for s in study.val_seeds])
                     for f, c in zip(folders, calibrated, strict=True)]
            out.append(PolicyRuns(name, "learned", [run(served_policy(c, name)) for c in calibrated],
                                  note="the served export with its small-action logit offset and guard fallback "
                                       "tuned on this scenario's val split (rlroute.export.bias), as the threshold "
                                       "rule's share is",
                                  extra={"action_bias_tuning": tuned}))
            tick(name)
    skipped: dict[str, str] = {}
    teacher = (cfg.agent.get("warm_start") or {}).get("teacher_path")
    for name in policies:
        if name not in POLICIES:
            skipped[name] = "not in the policy registry (rlroute.policies.registry.POLICIES) at this commit"
            log.warning("study: %s skipped: %s", name, skipped[name])
            continue
        extra: dict[str, Any] = {}
        if name == "threshold":
            policy, extra = tuned_threshold(cfg, study)
        elif name == "length_cut":
            policy, extra = tuned_length_cut(cfg, study)
        elif name == "supervised" and teacher:
            policy, extra = make_policy(name, model_path=str(teacher)), {"model": str(teacher),
                                                                        "note": "the learned policy's teacher"}
        else:
            policy = name
        out.append(PolicyRuns(name, _role(study, name), [run(policy)], extra=extra))
        tick(name)
    env.close()
    return out, skipped


def window_facts(policies: Sequence[PolicyRuns]) -> dict[str, Any]:
    """Decisions per window, and whether any prompt text occurs in two windows (then prompts repeat)."""
    records = policies[0].runs[0].records
    by_window: dict[int, set[str]] = {}
    for r in records:
        by_window.setdefault(int(r["seed"]), set()).add(str(r.get("prompt_id", "")))
    sets = [s - {""} for _, s in sorted(by_window.items())]
    repeats = any(sets[i] & sets[j] for i in range(len(sets)) for j in range(i + 1, len(sets)))
    counts = [sum(1 for r in records if int(r["seed"]) == w) for w in sorted(by_window)]
    return {"decisions_per_window": counts, "prompt_repeats_across_windows": bool(repeats)}


def by_prompt(entry: dict[str, Any], policies: Sequence[PolicyRuns], learned: str) -> None:
    """Where prompt texts recur across windows, add the request-level paired difference against the best
    non-learned baseline clustered by prompt (``paired.learned_minus_best_nonlearned_by_prompt``)."""
    best = entry["paired"].get("learned_minus_best_nonlearned")
    if not entry["prompt_repeats_across_windows"] or best is None:
        return
    by = {p.name: p for p in policies}
    found = prompt_clustered_difference(by[learned], by[best["baseline"]])
    entry["paired"]["learned_minus_best_nonlearned_by_prompt"] = found if found is not None else {
        "note": "prompts recur across windows, but the records carry no per-request reward to pair"}


MERGE_KEYS = ("commit", "schema_hash", "mode", "pilot")


def merged(results: dict[str, Any], path: Path) -> dict[str, Any]:
    """``results`` with the other scenarios of the ``results.json`` already at ``path`` when that file is
    from the same study (same commit, schema and mode): several ``rlroute study`` processes, one per scenario
    group, fill one file (they run in parallel on separate cores). Each scenario entry keeps the settings
    of the process that ran it (``scenarios.<name>.settings``: a scenario's training settings may be chosen
    on validation per scenario); the top-level ``settings`` are the last writer's. Otherwise ``results``."""
    if not path.is_file():
        return results
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return results
    if not isinstance(old, dict) or any(old.get(k) != results.get(k) for k in MERGE_KEYS):
        if isinstance(old, dict) and old.get("scenarios"):  # another study's results: kept aside, never dropped
            aside = path.with_name(f"results.{str(old.get('commit', 'unknown'))[:12]}.json")
            path.replace(aside)
            log.warning("study: %s is from another study (%s); moved to %s",
                        path, {k: old.get(k) for k in MERGE_KEYS}, aside)
        return results
    out = {**results, "scenarios": {**old.get("scenarios", {}), **results["scenarios"]}}
    out["commands"] = list(dict.fromkeys([*old.get("commands", []), *results["commands"]]))
    hashes = {n: e.get("sim_config_hash", "") for n, e in out["scenarios"].items()}
    out["sim_config_hash"] = _combined(hashes) if hashes else results.get("sim_config_hash", "")
    return out


def write_outputs(results: dict[str, Any], out: Path, learned: str) -> None:
    """``results.json`` (merged with the same study's other scenarios already there, under a file lock)
    plus ``<scenario>.md`` and the two PNGs per scenario into ``out``."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    for name, entry in results["scenarios"].items():
        (out / f"{name}.md").write_text(markdown_table(name, entry, learned) + "\n")
        plots(name, entry, out, learned)
    path = out / "results.json"
    with (out / ".results.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path.write_text(json.dumps(merged(results, path), indent=2, default=float) + "\n")
    log.info("study: wrote %s", path)


def run_scenarios(study: DictConfig, command: str) -> dict[str, Any]:
    """The ``scenarios`` mode of :func:`rlroute.study.cli.run_study`: every scenario in turn; returns and
    writes ``results.json``."""
    from rich.progress import Progress

    out = Path(str(study.out))
    scenarios = scenario_overrides(study)
    names = [str(p) for key in ("nonlearned", "competitors", "references") for p in study.get(key) or []]
    results: dict[str, Any] = {"commit": git_commit(out), "schema_hash": "", "sim_config_hash": "",
                               "commands": [command], "pilot": bool(study.get("pilot")), "mode": "scenarios",
                               "settings": settings(study), "scenarios": {}}
    hashes: dict[str, str] = {}
    t0 = time.perf_counter()
    with Progress() as progress:
        for name, overrides in scenarios.items():
            cfg = compose(study, overrides)
            task = progress.add_task(f"{name}: train", total=int(study.train_seeds) + 1 + len(names))
            t_train = time.perf_counter()
            runs = []
            for seed_dir in train_seeds(cfg, study, Path(str(study.runs_dir)) / name):
                runs.append(seed_dir)
                progress.advance(task)
            progress.update(task, description=f"{name}: evaluate")
            t_eval = time.perf_counter()
            pols, skipped = evaluate_scenario(cfg, study, runs, names,
                                              lambda _, t=task: progress.advance(t))  # type: ignore[misc]
            seconds = {"train": t_eval - t_train, "evaluate": time.perf_counter() - t_eval}
            entry = scenario_entry(pols, str(study.learned), int(study.n_boot), budget_share=budget_share(cfg))
            entry["seconds"] = seconds
            hashes[name] = sim_config_hash(cfg)
            entry.update(window_facts(pols), skipped=skipped, sim_config_hash=hashes[name],
                         overrides=list(overrides), settings=settings(study))
            by_prompt(entry, pols, str(study.learned))
            results["scenarios"][name] = entry
            results["schema_hash"] = schema_hash(cfg)
            results["sim_config_hash"] = _combined(hashes)
            write_outputs(results, out, str(study.learned))  # after every scenario: partial results survive
    results["wall_seconds"] = time.perf_counter() - t0
    write_outputs(results, out, str(study.learned))
    return results


def _combined(hashes: Mapping[str, str]) -> str:
    """One hash over every scenario's simulator-config hash (equal to it when there is one scenario)."""
    if len(set(hashes.values())) == 1:
        return next(iter(hashes.values()))
    return hashlib.sha256(json.dumps(dict(sorted(hashes.items()))).encode()).hexdigest()


def settings(study: DictConfig) -> dict[str, Any]:
    """The study's size knobs and tuning grids, recorded in ``results.json``."""
    keys = ("train_seeds", "test_windows", "total_timesteps", "episode_length", "eval_freq", "val_seeds",
            "threshold_shares", "length_cuts", "n_boot", "overrides")
    container = OmegaConf.to_container(study, resolve=True)
    assert isinstance(container, dict)
    return {k: container.get(k) for k in keys}
