"""Evaluate the 5 trained seeds of ``experiment=ppo_vs_baselines`` against every baseline and the oracle.

For each evaluation setting (workload x split) it writes a table with 95 % intervals, a Pareto plot and
an action-mix plot, adds the feature-block ablation rows (request / system / cache block blanked at
evaluation) and checks the issue's targets. Usage (after the training multirun, see README.md)::

    .venv/bin/python experiments/ppo_vs_baselines/study.py multirun/train/ppo_vs_baselines/<time> \
        --out experiments/ppo_vs_baselines/results --seeds 3000 3001 3002
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from rlroute.train.compare import (
    BASELINES,
    Row,
    baseline_row,
    find_runs,
    gap_recovered,
    learned_row,
    paired_difference,
    reference_costs,
    write_results,
)

# (tag, Hydra overrides, split): the in-domain and cross-domain test prompts of the training workload,
# then the traces (Mooncake timing and prefixes alone; the Azure code trace) with the latent quality model.
SETTINGS: list[tuple[str, list[str], str]] = [
    ("mmlu_mooncake_test", [], "test"),
    ("mmlu_mooncake_test_xdomain", [], "test_xdomain"),
    ("mooncake_trace_test", ["workload=mooncake", "quality=latent"], "test"),
    ("azure_code_test", ["workload=azure_code", "quality=latent"], "test"),
]
ABLATIONS = ("request", "system", "cache")


def targets(rows: list[Row]) -> dict[str, Any]:
    """The issue's three targets, computed (not asserted) from one setting's rows."""
    by = {r.policy: r for r in rows}
    ppo, large = by["ppo"], by["all_large"]
    best, recovered = gap_recovered(rows)
    quality_kept = ppo.mean("quality") / large.mean("quality") if large.mean("quality") > 0 else math.nan
    return {
        "best_heuristic": best,
        "reward_ppo": ppo.mean("reward"),
        "reward_best_heuristic": by[best].mean("reward") if best else math.nan,
        "beats_best_heuristic": bool(best) and ppo.mean("reward") > by[best].mean("reward"),
        "reward_minus_best_heuristic_paired": paired_difference(ppo, by[best]).as_dict() if best else None,
        "cost_saving": ppo.mean("cost_saving"),
        "quality_kept_vs_all_large": quality_kept,
        "cost_target_met": ppo.mean("cost_saving") >= 0.40 and quality_kept >= 0.95,
        "gap_recovered": recovered,
        "gap_target_met": math.isfinite(recovered) and recovered >= 0.80,
    }


def main() -> None:
    """Evaluate every setting and write the results folder."""
    from hydra import compose, initialize_config_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="multirun folder(s) or run folders of the training")
    parser.add_argument("--out", default="experiments/ppo_vs_baselines/results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3000, 3001, 3002])
    parser.add_argument("--settings", nargs="*", default=[s[0] for s in SETTINGS])
    args = parser.parse_args()
    runs = find_runs(args.runs)
    out = Path(args.out)
    conf = Path(__file__).resolve().parents[2] / "conf"
    summary: dict[str, Any] = {"runs": [str(r) for r in runs], "seeds": args.seeds, "settings": {}}
    for tag, overrides, split in SETTINGS:
        if tag not in args.settings:
            continue
        t0 = time.perf_counter()
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("config", overrides=["experiment=ppo_vs_baselines", *overrides])
        reference = reference_costs(cfg, split, args.seeds)
        rows = [learned_row(runs, cfg, split, args.seeds, reference)]
        rows += [baseline_row(b, cfg, split, args.seeds, reference) for b in BASELINES]
        rows += [learned_row(runs, cfg, split, args.seeds, reference, name=f"ppo-no-{b}", zero_blocks=[b])
                 for b in ABLATIONS]
        write_results(rows, out, tag, f"{tag}: PPO ({len(runs)} seeds) vs baselines")
        summary["settings"][tag] = {"overrides": overrides, "split": split, "targets": targets(rows),
                                    "seconds": time.perf_counter() - t0}
        print(f"{tag}: {json.dumps(summary['settings'][tag]['targets'], default=str)}", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
