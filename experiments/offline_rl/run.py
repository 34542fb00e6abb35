"""The offline-RL study of ``experiments/offline_rl/README.md``: logs, candidates, OPE, on-policy runs, statistics.

Every step caches its output under ``--work`` (default ``outputs/offline_rl``), so an interrupted run resumes.
PPO runs are trained beforehand by ``rlroute train`` (the README's command; this script exports them and
waits for none): a PPO seed without ``model.zip`` is left out and listed in ``missing``.

    PYTHONPATH=$PWD nice -n 10 python experiments/offline_rl/run.py --out experiments/offline_rl/results.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from scipy import stats as sps

from rlroute.paths import CONF_DIR

REPO = Path(__file__).resolve().parents[2]
SEEDS, WINDOWS = range(5), 10
SCENARIO = ["experiment=quickstart"]
VARIANTS: dict[str, list[str]] = {"bc": ["offline=bc"], "cql_a0.1": ["offline=cql", "offline.alpha=0.1"],
                                  "cql_a1": ["offline=cql", "offline.alpha=1"], "cql_a5": ["offline=cql", "offline.alpha=5"]}
# Added after the first results (README "Post-hoc"), not pre-registered: 10x the gradient steps, and alpha 0
# (plain per-action reward regression), to tell under-training and conservatism apart.
POSTHOC: dict[str, list[str]] = {"cql_a0.1_e200": ["offline=cql", "offline.alpha=0.1", "offline.epochs=200"],
                                 "cql_a0_e200": ["offline=cql", "offline.alpha=0", "offline.epochs=200"]}
TRAIN_EPISODES, HELD_EPISODES, EPS = 12, 8, 0.2
# Added at 16:45 after run 1 (post-hoc): the primary CQL on 4x the log (48 episodes; the first 12 are run 1's).
POSTHOC_4X: dict[str, list[str]] = {"cql_a1_log4x": ["offline=cql", "offline.alpha=1"]}


def cfg_of(name: str, *overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=[*SCENARIO, *overrides])


def logs(work: Path, scale: int = 1) -> tuple[dict[int, Path], Path]:
    from rlroute.offline.dataset import simulate

    cfg = cfg_of("train_offline")
    tag = "" if scale == 1 else f"{scale}x_"
    train = {s: work / "logs" / f"train_{tag}seed{s}.jsonl" for s in SEEDS}
    for s, p in train.items():
        if not p.is_file():
            print(simulate(cfg, p, TRAIN_EPISODES * scale, EPS, 40_000 + 1000 * s), flush=True)
    held = work / "logs" / "held_val.jsonl"
    if not held.is_file():
        print(simulate(cfg, held, HELD_EPISODES, EPS, 60_000, split="val"), flush=True)
    return train, held


def offline_candidates(work: Path, train: dict[int, Path], variants: dict[str, list[str]]) -> dict[str, Path]:
    from rlroute.offline.trainer import train_offline

    out = {}
    for name, ov in variants.items():
        for s in SEEDS:
            run = work / "offline" / name / f"seed{s}"
            if not (run / "export" / "manifest.json").is_file():
                res = train_offline(cfg_of("train_offline", *ov, f"seed={s}", f"dataset.log={train[s]}"), run)
                print(name, s, {k: res.metrics[k] for k in ("val/agreement", "fit_seconds")}, flush=True)
            out[f"{name}/seed{s}"] = run / "export"
    return out


def ppo_candidates(work: Path) -> tuple[dict[str, Path], list[str]]:
    from rlroute.export.cli import export_policy

    out, missing = {}, []
    for s in SEEDS:
        run = work / "ppo" / f"seed{s}"
        if not (run / "metrics.json").is_file():  # written last: the run folder is complete
            missing.append(f"ppo/seed{s}")
            continue
        if not (run / "export" / "manifest.json").is_file():
            export_policy(run / "export", cfg_of("export", "out=x"), run_dir=run, n_verify=1000, seed=s,
                          overwrite=True, ood={"enabled": False})
        out[f"ppo/seed{s}"] = run / "export"
    return out, missing


def ope(work: Path, held: Path, cands: dict[str, Path]) -> dict[str, Any]:
    from rlroute.eval.ope import evaluate
    from rlroute.offline.dataset import reward_spec

    spec = reward_spec(cfg_of("train_offline").reward)
    res = {}
    for name, folder in cands.items():
        cache = work / "ope" / f"{name.replace('/', '_')}.json"
        if not cache.is_file():
            r = evaluate(held, folder, spec, n_boot=500, seed=0)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({k: r[k] for k in ("estimates", "agreement", "effective_sample_size",
                                                           "target_action_shares", "records")}))
        res[name] = json.loads(cache.read_text())
    return res


def on_policy(work: Path, cands: dict[str, Path]) -> dict[str, Any]:
    from rlroute.env import build_env
    from rlroute.eval.run import all_large_costs, evaluate
    from rlroute.policies.onnx import OnnxPolicy

    cfg = cfg_of("config")
    env = build_env(cfg, split="test")
    seeds = list(range(WINDOWS))
    ref_file = work / "onpolicy" / "_all_large_cost.json"
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    if not ref_file.is_file():
        ref_file.write_text(json.dumps(all_large_costs(cfg, "test", seeds, env=env, windows=WINDOWS)))
    ref = {int(k): v for k, v in json.loads(ref_file.read_text()).items()}
    res = {}
    todo: dict[str, Any] = {**{k: OnnxPolicy(str(v), ood=False) for k, v in cands.items()},
                            "heuristic": "heuristic", "all_small": "all_small"}
    for name, pol in todo.items():
        cache = work / "onpolicy" / f"{name.replace('/', '_')}.json"
        if not cache.is_file():
            t = time.time()
            r = evaluate(pol, cfg, "test", seeds=seeds, reference_cost=ref, env=env, windows=WINDOWS)
            shares = np.bincount([rec["action"] for rec in r.records], minlength=3) / len(r.records)
            cache.write_text(json.dumps({"reward": [m["reward"] for m in r.per_seed], "action_shares": shares.tolist(),
                                         "seconds": time.time() - t}))
            print(name, np.mean(json.loads(cache.read_text())["reward"]), flush=True)
        res[name] = json.loads(cache.read_text())
    env.close()
    return res


def selection(est: dict[str, Any], onp: dict[str, Any], names: list[str]) -> dict[str, Any]:
    truth = np.array([np.mean(onp[n]["reward"]) for n in names])
    out: dict[str, Any] = {"candidates": len(names), "best_on_policy": names[int(truth.argmax())],
                           "best_on_policy_value": float(truth.max())}
    for k in ("dr", "ips", "snips"):
        e = np.array([est[n]["estimates"][k]["value"] for n in names])
        pick = int(np.nanargmax(e))
        out[k] = {"spearman": float(sps.spearmanr(e, truth).statistic), "kendall": float(sps.kendalltau(e, truth).statistic),
                  "selected": names[pick], "regret": float(truth.max() - truth[pick])}
    return out


def paired(onp: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    from rlroute.eval.stats import paired_bootstrap

    def mat(prefix: str) -> np.ndarray:
        rows = [onp[k]["reward"] for k in sorted(onp) if k.startswith(prefix + "/")] or [onp[prefix]["reward"]]
        return np.asarray(rows)

    iv = paired_bootstrap(mat(a), mat(b))
    return {"a": a, "b": b, "diff": iv.mean, "lo": iv.low, "hi": iv.high, "windows": iv.n,
            "seeds": [len(mat(a)), len(mat(b))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / "outputs" / "offline_rl")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--posthoc", action="store_true", help="also the POSTHOC variants (reported apart)")
    a = ap.parse_args()
    t0 = time.time()
    train, held = logs(a.work)
    off = offline_candidates(a.work, train, VARIANTS)
    ppo, missing = ppo_candidates(a.work)
    post = offline_candidates(a.work, train, POSTHOC) if a.posthoc else {}
    if a.posthoc:
        post |= offline_candidates(a.work, logs(a.work, 4)[0], POSTHOC_4X)
    cands = {**off, **ppo, **post}
    est = ope(a.work, held, cands)
    onp = on_policy(a.work, cands)
    names_all, names_off = [*off, *ppo], list(off)
    table = {n: {"on_policy": float(np.mean(onp[n]["reward"])), "dr": est[n]["estimates"]["dr"]["value"],
                 "ips": est[n]["estimates"]["ips"]["value"], "agreement_with_log": est[n]["agreement"],
                 "action_shares": onp[n]["action_shares"]} for n in cands}
    comps = [("cql_a1", "ppo"), ("bc", "ppo"), ("cql_a0.1", "ppo"), ("cql_a5", "ppo"), ("cql_a1", "heuristic"),
             ("bc", "heuristic"), ("ppo", "heuristic"), ("cql_a1", "all_small"), ("ppo", "all_small")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {"commit": commit, "scenario": SCENARIO, "windows": WINDOWS, "seeds": list(SEEDS), "missing": missing,
              "selection_all": selection(est, onp, names_all), "selection_offline": selection(est, onp, names_off),
              "paired": [paired(onp, x, y) for x, y in comps if not (y == "ppo" and missing)],
              "baselines": {k: float(np.mean(onp[k]["reward"])) for k in ("heuristic", "all_small")},
              "candidates": table, "seconds": time.time() - t0}
    if post:
        result["posthoc"] = {"variants": {**POSTHOC, **{k: [*v, "4x log"] for k, v in POSTHOC_4X.items()}},
                             "selection_with_posthoc": selection(est, onp, list(cands)),
                             "paired": [paired(onp, x, y) for x in [*POSTHOC, *POSTHOC_4X]
                                        for y in ("ppo", "heuristic", "all_small")
                                        if not (y == "ppo" and missing)]}
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
