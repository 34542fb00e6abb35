"""Leave-one-workload-out: train PPO over every other shipped workload with domain randomisation
(:mod:`rlroute.study.randomise`), evaluate on the held-out one's disjoint test windows against the
non-learned baselines (and the references). Learned non-RL competitors are left out here: they would be
trained on the held-out workload's own train split, which the learned policy never sees.

Out-of-distribution guard: with ``study.served.enabled`` each run is also evaluated as the router serves it
(:mod:`rlroute.study.served`: the exported policy, its guard calibrated on validation observations of the
training members only); ``ood_fallback_rate`` is that policy's fallback rate on the held-out workload.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlroute.env.build import build_env
from rlroute.study.randomise import RandomisedBuilder
from rlroute.study.results import scenario_entry
from rlroute.study.runner import (
    _combined,
    by_prompt,
    compose,
    evaluate_scenario,
    git_commit,
    schema_hash,
    settings,
    sim_config_hash,
    train_seeds,
    window_facts,
    write_outputs,
)

log = logging.getLogger(__name__)
OOD_NOTE = "no OOD fallback rate: the served evaluation is off (study.served.enabled=false)"


def available_members(study: DictConfig) -> tuple[dict[str, DictConfig], dict[str, str]]:
    """Composed configs of the ``lowo.members`` whose data loads; the others with the reason."""
    ok, skipped = {}, {}
    for name, overrides in study.lowo.members.items():
        cfg = compose(study, [str(o) for o in overrides])
        try:
            build_env(cfg, split="test").close()  # loads the data: a missing file fails here, named
        except Exception as e:  # Hydra wraps the loader's error; only missing data is a skip
            missing = _missing_data(e)
            if missing is None:
                raise
            skipped[str(name)] = f"{type(missing).__name__}: {missing}"
            log.warning("lowo: member %s skipped: %s", name, skipped[str(name)])
            continue
        ok[str(name)] = cfg
    return ok, skipped


def _missing_data(error: BaseException | None) -> OSError | None:
    """The ``FileNotFoundError`` / ``OSError`` behind ``error`` (following ``__cause__``), if any."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def run_lowo(study: DictConfig, command: str) -> dict[str, Any]:
    """Each held-out member in turn (or ``lowo.held_out``); writes ``results.json`` like the scenario mode."""
    out = Path(str(study.out)) / "lowo"
    members, missing = available_members(study)
    held = [str(h) for h in study.lowo.held_out] if study.lowo.get("held_out") else list(members)
    unknown = [h for h in held if h not in members]
    if unknown:
        raise ValueError(f"study.lowo.held_out: {unknown} not available; available: {sorted(members)}, "
                         f"skipped: {missing}")
    if len(members) < 2:
        raise ValueError(f"lowo needs at least 2 available members, got {sorted(members)} (skipped: {missing})")
    dr = OmegaConf.to_container(study.dr, resolve=True)
    assert isinstance(dr, dict)
    names = [str(p) for key in ("nonlearned", "references") for p in study.get(key) or []]
    results: dict[str, Any] = {"commit": git_commit(out), "schema_hash": "", "sim_config_hash": "",
                               "commands": [command], "pilot": bool(study.get("pilot")), "mode": "lowo",
                               "settings": {**settings(study), "dr": dr}, "skipped_members": missing,
                               "scenarios": {}}
    hashes: dict[str, str] = {}
    t0 = time.perf_counter()
    for h in held:
        train_members = [cfg for name, cfg in members.items() if name != h]
        builder = RandomisedBuilder(train_members, {str(k): v for k, v in dr.items()})
        runs = train_seeds(train_members[0], study, Path(str(study.runs_dir)) / f"without_{h}", builder=builder)
        pols, skipped = evaluate_scenario(members[h], study, runs, names, trained_on=train_members)
        entry = scenario_entry(pols, str(study.learned), int(study.n_boot))
        key = f"lowo_{h}"
        hashes[key] = sim_config_hash(members[h])
        served = entry["policies"].get(f"{study.learned}_served")
        fallback = served["metrics"].get("fallback_rate") if served else None
        entry.update(window_facts(pols), skipped=skipped, sim_config_hash=hashes[key],
                     trained_on=[n for n in members if n != h], ood_fallback_rate=fallback,
                     **({} if fallback else {"ood_note": OOD_NOTE}))
        by_prompt(entry, pols, str(study.learned))
        results["scenarios"][key] = entry
        results["schema_hash"] = schema_hash(members[h])
        results["sim_config_hash"] = _combined(hashes)
        write_outputs(results, out, str(study.learned))
    results["wall_seconds"] = time.perf_counter() - t0
    write_outputs(results, out, str(study.learned))
    return results
