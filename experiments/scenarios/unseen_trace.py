"""Run a scenario's trained runs on a trace they never saw, served as `rlroute serve` runs them.

The guard is calibrated on the *training* scenario's validation observations (as a leave-one-workload-out
run does: the held-out trace is never seen before its test windows), the policies and every non-learned
baseline are evaluated on the test windows of the scenario with the other workload, paired (README: "Run 4's
multiturn_cache policies on the Mooncake conversation trace" and "The same policies on ShareGPT
conversations"). Needs ../shared/data. One output folder per workload (each results.json records its own
commit; a second run into the same folder moves the first file aside). Usage:

    python experiments/scenarios/unseen_trace.py multiturn_cache workload=mooncake workload.rate=null \
        "~workload.think_time_s" "~workload.prompts" experiments/scenarios/unseen_trace/mooncake
    python experiments/scenarios/unseen_trace.py multiturn_cache workload=sharegpt "~workload.prompts.mean_turns" \
        "~workload.prompts.max_turns" experiments/scenarios/unseen_trace/sharegpt
"""
import sys
import time
from pathlib import Path

from hydra import compose as hcompose
from hydra import initialize_config_dir

from rlroute.study import runner

scen, shift, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
with initialize_config_dir(config_dir=str(Path("conf").resolve()), version_base="1.3"):
    study = hcompose("study", overrides=[f"scenarios=[{scen}]", "~regimes.colocated", "train_seeds=5", "test_windows=10",
                                         "runs_dir=outputs/study/run4", f"out={out}", "competitors=[]", "references=[]"])
names = [str(p) for key in ("nonlearned", "competitors", "references") for p in study.get(key) or []]
(name, overrides), = runner.scenario_overrides(study).items()
trained = runner.compose(study, overrides)
unseen = runner.compose(study, [*overrides, *shift])
runs = [Path(str(study.runs_dir)) / name / f"seed{k}" for k in range(5)]
t0 = time.perf_counter()
pols, skipped = runner.evaluate_scenario(unseen, study, runs, names, trained_on=[trained])
entry = runner.scenario_entry(pols, str(study.learned), int(study.n_boot))
entry["seconds"] = {"evaluate": time.perf_counter() - t0}
entry.update(runner.window_facts(pols), skipped=skipped, sim_config_hash=runner.sim_config_hash(unseen),
             overrides=[*overrides, *shift], settings=runner.settings(study))
entry["note"] = (f"run 4's {name} runs (trained on its own workload) on {' '.join(shift)}: guard calibrated on "
                 f"{name}'s validation split only")
key = f"{name}@{shift[0].split('=')[-1]}"
res = {"commit": runner.git_commit(), "schema_hash": runner.schema_hash(unseen), "sim_config_hash": entry["sim_config_hash"],
       "commands": ["python experiments/scenarios/unseen_trace.py " + " ".join(sys.argv[1:])], "pilot": False,
       "mode": "scenarios", "settings": runner.settings(study), "scenarios": {key: entry}}
runner.write_outputs(res, Path(out), str(study.learned))
