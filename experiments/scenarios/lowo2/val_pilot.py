"""LOWO on VALIDATION data only: train DR runs without one member (optional) and score each run on its own
*training* members' val split against all_small and the seed heuristic. Held-out test windows are never touched.

Question it answers: does the DR-trained policy lose where it was trained, too (an optimisation failure), or
only on the held-out member (a generalisation failure)?

    # score the runs of a LOWO run (its runs_dir)
    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/lowo2/val_pilot.py \\
        --runs outputs/study/lowo2 --held-out azure_code --out without_azure_code.json
    # train a setting first (seeds 0..n-1), then score it
    ... val_pilot.py --train 1 --runs /tmp/pilot --held-out azure_code --out qb.json agent.quality_baseline=small
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf, open_dict

from rlroute.eval.run import evaluate
from rlroute.paths import CONF_DIR
from rlroute.policies.sb3 import SB3Policy
from rlroute.study.lowo import available_members
from rlroute.study.randomise import RandomisedBuilder
from rlroute.study.runner import train_seeds

ACTIONS = {"0": "large", "1": "small", "2": "hybrid"}
STUDY = ["total_timesteps=200000", "dr.cost_scale=[1.0,1.0]", "dr.instances.large=[2,4,6]"]  # LOWO run 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="runs_dir (LOWO layout: <runs>/without_<member>/seed<k>)")
    ap.add_argument("--held-out", required=True)
    ap.add_argument("--train", type=int, default=0, help="train this many seeds first (0: score existing runs)")
    ap.add_argument("--seeds", default="1000,1001", help="val episodes (the study's val_seeds)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="*", help="root-config overrides of every member (study.overrides)")
    args = ap.parse_args()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        study = hydra_compose("study", overrides=STUDY)
    with open_dict(study):
        study.overrides = list(args.overrides)
        study.train_seeds = max(args.train, 1)
    members, _ = available_members(study)
    train = {n: c for n, c in members.items() if n != args.held_out}
    folder = args.runs / f"without_{args.held_out}"
    if args.train:
        dr = OmegaConf.to_container(study.dr, resolve=True)
        assert isinstance(dr, dict)
        train_seeds(next(iter(train.values())), study, folder, builder=RandomisedBuilder(list(train.values()), dr))
    runs = sorted(folder.glob("seed*"))
    seeds = [int(s) for s in args.seeds.split(",")]
    table: dict[str, dict[str, dict[str, object]]] = {}
    for name, cfg in train.items():
        rows = {}
        for label, pol in [*[(r.name, SB3Policy(r, name="ppo")) for r in runs], ("all_small", "all_small"),
                           ("heuristic", "heuristic")]:
            res = evaluate(pol, cfg, "val", seeds, reference_cost={s: 1.0 for s in seeds})
            mix = Counter(ACTIONS[str(rec["action"])] for rec in res.records)
            n = sum(mix.values())
            rows[label] = {"reward": sum(m["reward"] for m in res.per_seed) / len(res.per_seed),
                           "mix": {a: mix[a] / n for a in ACTIONS.values()}}
            print(name, label, round(float(rows[label]["reward"]), 4),  # type: ignore[arg-type]
                  {a: round(v, 3) for a, v in rows[label]["mix"].items()}, flush=True)  # type: ignore[attr-defined]
        table[name] = rows
    args.out.write_text(json.dumps({"held_out": args.held_out, "val_seeds": seeds, "overrides": args.overrides,
                                    "study": STUDY, "members": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
