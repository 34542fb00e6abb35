"""Re-evaluate one scenario of a study from its trained runs (no training), as `rlroute study` evaluates it.

Used for run 4, whose results.json lost five entries to a runner bug (fixed in 64b9501); run from the checkout
the study ran at:

    python experiments/scenarios/reevaluate.py token_api "references=[reward_oracle,quality_oracle]" \
        "overrides=['agent.warm_start.teacher=supervised']" total_timesteps=40960 /tmp/reeval_ta

and for run 4's served re-evaluation with the final guard (README "Run 4, served with the final guard"): the
regime by a ``~regimes.<other>`` argument (default: the dedicated regime), ``note=...`` for the entry:

    python experiments/scenarios/reevaluate.py token_api "~regimes.dedicated" "competitors=[]" "references=[]" \
        "note=..." /tmp/served_ta
"""
import sys
import time
from pathlib import Path

from hydra import compose as hcompose
from hydra import initialize_config_dir

from rlroute.study import runner
from rlroute.train.budget import budget_share

scen, extra, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
note = next((e.split("=", 1)[1] for e in extra if e.startswith("note=")),
            "re-evaluated from run 4's trained runs (outputs/study/run4) at a66b8fa: the first evaluation's results.json "
            "entry was lost")
regime = [e for e in extra if e.startswith("~regimes.")] or ["~regimes.colocated"]
extra = [e for e in extra if not e.startswith(("note=", "~regimes."))]
with initialize_config_dir(config_dir=str(Path("conf").resolve()), version_base="1.3"):
    study = hcompose("study", overrides=[f"scenarios=[{scen}]", *regime, "train_seeds=5", "test_windows=10",
                                         "runs_dir=outputs/study/run4", f"out={out}", *extra])
names = [str(p) for key in ("nonlearned", "competitors", "references") for p in study.get(key) or []]
(name, overrides), = runner.scenario_overrides(study).items()
cfg = runner.compose(study, overrides)
base = Path(str(study.runs_dir)) / name
runner.teacher_model(cfg, base)
runs = [base / f"seed{k}" for k in range(5)]
t0 = time.perf_counter()
pols, skipped = runner.evaluate_scenario(cfg, study, runs, names)
entry = runner.scenario_entry(pols, str(study.learned), int(study.n_boot), budget_share=budget_share(cfg))
entry["seconds"] = {"evaluate": time.perf_counter() - t0}
entry.update(runner.window_facts(pols), skipped=skipped, sim_config_hash=runner.sim_config_hash(cfg),
             overrides=list(overrides), settings=runner.settings(study))
runner.by_prompt(entry, pols, str(study.learned))
entry["note"] = note
res = {"commit": runner.git_commit(), "schema_hash": runner.schema_hash(cfg), "sim_config_hash": entry["sim_config_hash"],
       "commands": ["python experiments/scenarios/reevaluate.py " + " ".join(sys.argv[1:])], "pilot": False, "mode": "scenarios",
       "settings": runner.settings(study), "scenarios": {name: entry}}
runner.write_outputs(res, Path(out), str(study.learned))
