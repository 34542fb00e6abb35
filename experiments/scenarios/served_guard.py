"""The served policy with the study's guard against the same export re-calibrated with the current guard (validation only).

Run 4 of the study found its served policy (`ppo_served`: ONNX + OOD guard + seed-heuristic fallback) refusing
15-70 % of the decisions on in-distribution test windows (README, "Run 4: the served policy"). The mechanism
(`--trace`: the refused share over one validation episode): the guard then also scored the features that the
router's *own* routing moves (how the load splits between the pools, their queues and caches). One refused
decision hands the request to the seed heuristic, which routes differently; the pools' load moves where the
learned policy never took it, the guard refuses again, and the fallback holds itself up. The current guard
scores only what the routing does not move (:func:`rlroute.export.ood.routed_dims`).

On validation episodes only (val seeds 1002-1005: used by neither the study's snapshot choice, 1000-1001, nor
its test windows), per training run of the named scenarios: ``ppo`` (the unguarded policy, SB3), ``served``
(the study's export as the router runs it) and ``served_exo`` (the same export re-calibrated with the current
guard layout on the study's own calibration observations, :func:`rlroute.export.ood.calibrate`).

    RLROUTE_SHARED_DATA=/work/shared/data .venv/bin/python experiments/scenarios/served_guard.py \
        --runs outputs/study/run4 --scenarios provisioned_fleet token_api budgeted
    .venv/bin/python experiments/scenarios/served_guard.py --runs outputs/study/run4 --trace provisioned_fleet/seed0
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from rlroute.eval.run import default_env_factory, evaluate
from rlroute.export.cli import build_env
from rlroute.export.ood import RANGE_FACTOR, RANGE_MARGIN, ObsStats, calibrate, guard_layout
from rlroute.features.spec import build_schema
from rlroute.policies.sb3 import SB3Policy
from rlroute.study.served import CALIB_FILE, SERVED_DIR, served_policy

VAL_SEEDS = [1002, 1003, 1004, 1005]
log = logging.getLogger("served_guard")


def export_exo(run: Path) -> Path:
    """``<run>/served_exo``: the study's export with the current guard layout, calibrated on the same halves."""
    src, out = run / SERVED_DIR, run / "served_exo"
    manifest = json.loads((src / "manifest.json").read_text())
    ood = manifest["ood"]
    schema = build_schema(manifest["feature_schema"]["text"])
    lay = guard_layout(schema)
    calib = np.load(run / CALIB_FILE)
    half = len(calib) // 2
    slices = {b: slice(*ood["blocks"][b]) for b in ood["blocks"]}
    guard, record = calibrate(ObsStats.from_json(ood["stats"]), slices, calib[:half], calib[half:],
                              float(ood["calibration"]["target_fpr"]), RANGE_MARGIN, lay["range_exempt"],
                              lay["ignored"], lay["log_norm"], RANGE_FACTOR, lay["saturation"])
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out)
    manifest["ood"] = {**guard.to_json(), "calibration": {**ood["calibration"], **record,
                                                          "variant": "current guard layout (served_guard.py)"}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def val(policy: Any, cfg: Any) -> dict[str, float]:
    env = default_env_factory(cfg, "val")
    try:
        res = evaluate(policy, cfg, "val", VAL_SEEDS, reference_cost=None, env=env)
    finally:
        env.close()
    return {k: float(np.mean([m.get(k, 0.0) for m in res.per_seed])) for k in ("reward", "fallback_rate")}


def trace(run: Path, steps: int = 1024) -> list[float]:
    """Fallback share per 128 decisions of one validation episode (seed 1002) of the study's served policy."""
    cfg = OmegaConf.load(run / "config.yaml")
    pol = served_policy(run / SERVED_DIR, "ppo_served")
    env = build_env(cfg, "val")
    env.reset(seed=VAL_SEEDS[0])
    refused = []
    for _ in range(steps):
        ctx = env.decision_context()
        action = int(pol.act(ctx))
        refused.append(pol.last.reason is not None)
        *_, term, trunc, _ = env.step(action)
        if term or trunc:
            break
    env.close()
    return [float(np.mean(refused[i:i + 128])) for i in range(0, len(refused), 128)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("outputs/study/run4"))
    ap.add_argument("--scenarios", nargs="*", default=[])
    ap.add_argument("--trace", default=None, help="<scenario>/<seedK>: fallback share over one validation episode")
    ap.add_argument("--out", type=Path, default=Path("experiments/scenarios/served_guard.json"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    out = json.loads(a.out.read_text()) if a.out.is_file() else {}
    if a.trace:
        out.setdefault("trace", {})[a.trace] = trace(a.runs / a.trace)
        log.info("trace %s: %s", a.trace, out["trace"][a.trace])
    for name in a.scenarios:
        rows: dict[str, Any] = {}
        for run in sorted((a.runs / name).glob("seed*")):
            cfg = OmegaConf.load(run / "config.yaml")
            exo = export_exo(run)
            rows[run.name] = {"fpr_holdout_exo": json.loads((exo / "manifest.json").read_text())["ood"]["calibration"]["fpr_holdout"],
                              "ppo": val(SB3Policy(run, name="ppo"), cfg),
                              "served": val(served_policy(run / SERVED_DIR, "ppo_served"), cfg),
                              "served_exo": val(served_policy(exo, "ppo_served_exo"), cfg)}
            log.info("%s %s: %s", name, run.name, rows[run.name])
        out[name] = {"val_seeds": VAL_SEEDS, "runs": rows,
                     "mean": {k: {m: float(np.mean([r[k][m] for r in rows.values()])) for m in ("reward", "fallback_rate")}
                              for k in ("ppo", "served", "served_exo")}}
        log.info("%s mean: %s", name, out[name]["mean"])
        a.out.write_text(json.dumps(out, indent=1))
    a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
