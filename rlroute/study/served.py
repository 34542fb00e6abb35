"""The learned policy as the router serves it: each training run exported and evaluated through
:class:`~rlroute.policies.onnx.OnnxPolicy` with the router's fallback.

The SB3 policy the study trains is not what a deployment runs: ``rlroute serve`` loads the exported ONNX
graph, scores every observation with the out-of-distribution guard written into its manifest, and lets
the seed heuristic decide what the guard refuses (``conf/serve.yaml``: ``policy@fallback: heuristic``).
So every training run is also exported (:func:`rlroute.export.cli.export_policy`, the export the README's
path uses) and evaluated that way on the same test windows, as ``<learned>_served``: its rewards, and how
often the guard refused (``fallback_rate`` / ``ood_rate`` per window, from :func:`rlroute.eval.run.evaluate`).

The guard's thresholds are calibrated on *validation* observations of every scenario the run trained on
(one scenario in the scenario study; every training member in leave-one-workload-out), driven by the
exported policy itself: half fit the thresholds, the other half measure the false-positive rate
(``manifest.ood.calibration``). The held-out workload of a LOWO run is never seen, so its fallback rate is
the guard's answer to a trace it was not built for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from rlroute.export.cli import build_env, export_policy, greedy_actor
from rlroute.export.graph import load_run
from rlroute.export.verify import record_observations

log = logging.getLogger(__name__)

SERVED_DIR = "served"      # <run_dir>/served: the exported policy folder
CALIBRATED_DIR = "served_calibrated"  # <run_dir>/served_calibrated: the same with its action_bias tuned (export.bias)
CALIB_FILE = "calib_obs.npy"


def calibration_obs(run_dir: Path, cfgs: Sequence[DictConfig], n: int, seed: int = 0) -> Path:
    """``n`` validation observations of the run's own greedy policy, written to ``<run_dir>/calib_obs.npy``
    as two equal halves (first: fit, second: hold-out), each with an equal share from every config in
    ``cfgs`` recorded on different episode seeds."""
    if not cfgs:
        raise ValueError("calibration_obs: expected at least one scenario config")
    per = max(1, n // (2 * len(cfgs)))
    model, norm, algo = load_run(run_dir)
    act = greedy_actor(model, norm, algo)
    halves: list[list[np.ndarray]] = [[], []]
    for i, cfg in enumerate(cfgs):
        env = build_env(cfg, "val")  # one env per scenario: each half resets it with its own seeds
        try:
            for h, base in enumerate((101, 20_101)):
                halves[h].append(record_observations(env, per, seed + base + 1_000 * i, act).obs)
        finally:
            env.close()
    path = run_dir / CALIB_FILE
    np.save(path, np.concatenate([np.concatenate(halves[0]), np.concatenate(halves[1])]))
    return path


def export_served(run_dir: Path, cfgs: Sequence[DictConfig], n_calib: int, n_verify: int, seed: int = 0) -> Path:
    """Export ``run_dir`` to ``<run_dir>/served`` (replacing an older export) with the OOD guard calibrated
    on :func:`calibration_obs` of ``cfgs``; returns the folder."""
    calib = calibration_obs(run_dir, cfgs, n_calib, seed)
    out = run_dir / SERVED_DIR
    manifest = export_policy(out, cfgs[0], run_dir=run_dir, n_verify=n_verify, split="val", seed=seed,
                             overwrite=True, ood={"calib_file": str(calib)})
    cal = manifest["ood"]["calibration"]
    log.info("served export %s: guard false-positive rate on held-out validation %s", out,
             cal.get("fpr_holdout"))
    return out


def served_policy(folder: Path, name: str) -> Any:
    """The exported policy as ``rlroute serve`` decides with it: guard on, the seed heuristic as fallback (a
    calibrated folder's ``manifest.fallback`` replaces it, as in the router)."""
    from rlroute.policies.onnx import OnnxPolicy
    from rlroute.policies.registry import make_policy

    return OnnxPolicy(folder, fallback=make_policy("heuristic"), name=name)


def guard_facts(folders: Sequence[Path]) -> dict[str, Any]:
    """Per training run: the guard's calibration record (thresholds' false-positive rate on validation)."""
    facts = []
    for f in folders:
        ood = json.loads((Path(f) / "manifest.json").read_text()).get("ood") or {}
        facts.append(ood.get("calibration"))
    return {"guard_calibration": facts}
