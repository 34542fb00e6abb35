"""The study's per-scenario paired table (README and closing note) from ``results.json``.

    python experiments/scenarios/summary.py [experiments/scenarios/results.json] [--rewrite]
    python experiments/scenarios/summary.py experiments/scenarios/lowo/results.json   # leave-one-workload-out

Applies the budget rule of :func:`rlroute.study.results.infeasible_references` to every entry first (a
reference over a budgeted scenario's large-model budget is no reference), so files written before that rule
read the same way as new ones; ``--rewrite`` writes that back into the file and the ``<scenario>.md`` tables
beside it (nothing else changes: every number comes from the run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rlroute.study.results import infeasible_references, markdown_table


def fmt(d: dict | None, digits: int = 3) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    return f"{d['mean']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--rewrite"]
    path = Path(args[0] if args else "experiments/scenarios/results.json")
    res = json.loads(path.read_text())
    if "--rewrite" in sys.argv:
        for name, e in res["scenarios"].items():
            (path.parent / f"{name}.md").write_text(markdown_table(name, infeasible_references(e)) + "\n")
        path.write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(f"commit {res['commit']}, schema {res['schema_hash'][:12]}, sim config {res['sim_config_hash'][:12]}\n")
    if res.get("mode") == "lowo":
        lowo_table(res)
        return
    print("| scenario | PPO | best non-learned | PPO − best (paired 95 %) | supervised | LinUCB | reward oracle "
          "| gap recovered (oracle / supervised) | PPO large+hybrid share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, e in res["scenarios"].items():
        e = infeasible_references(e)
        pol = e["policies"]
        best = e["paired"].get("learned_minus_best_nonlearned", {})
        b = best.get("baseline", "")
        gap = e["gap_recovered"]

        def m(p: str, pol: dict = pol) -> str:
            return f"{pol[p]['mean']:.3f}" if p in pol else "n/a"

        g = " / ".join("null" if gap.get(k) is None else f"{gap[k]:.2f}" for k in ("reward_oracle", "supervised"))
        share = pol["ppo"]["metrics"].get("strong_share", {})
        print(f"| {name} | {m('ppo')} | {b} {m(b)} | {fmt(best)} | {m('supervised')} | {m('linucb')} | "
              f"{m('reward_oracle')} | {g} | {share.get('mean', float('nan')):.2f} |")
    print("\nLearned non-RL competitors − best non-learned baseline (one run each: paired percentile bootstrap "
          "over the test windows, 4,000 resamples, seed 0):")
    rng = np.random.default_rng(0)
    for name, e in res["scenarios"].items():
        b = e["paired"].get("learned_minus_best_nonlearned", {}).get("baseline")
        if not b:
            continue
        base = np.array(e["policies"][b]["per_seed"])
        for comp in ("supervised", "linucb"):
            if comp not in e["policies"]:
                continue
            d = np.array(e["policies"][comp]["per_seed"]) - base
            boot = d[rng.integers(0, len(d), (4000, len(d)))].mean(axis=1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            print(f"- {name}: {comp} − {b} {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print()
    for name, e in res["scenarios"].items():
        if e["gap_recovered"].get("note"):
            print(f"- {name}: {e['gap_recovered']['note']}")


def lowo_table(res: dict) -> None:
    """Per held-out workload: PPO and PPO as served (guard + heuristic fallback) against the best rule, the
    guard's fallback rate there and its false-positive rate on the training members' validation halves; and,
    where the run has it, the served policy calibrated to the held-out member's val split (``ppo_calibrated``:
    its mean, paired difference, chosen small-action offsets and large share)."""
    calibrated = any("ppo_calibrated" in e["policies"] for e in res["scenarios"].values())
    head = ("| held out | best non-learned | PPO | PPO − best (paired 95 %) | PPO served | served − best (paired 95 %) "
            "| fallback rate (held out) | guard FPR on training val | target (upper end ≥ 0, served) |")
    rule = "|---|---|---|---|---|---|---|---|---|"
    if calibrated:
        head += " PPO calibrated | calibrated − best (paired 95 %) | offsets chosen | large share served → calibrated | target (calibrated) |"
        rule += "---|---|---|---|---|"
    print(head)
    print(rule)
    for name, e in res["scenarios"].items():
        pol, paired = e["policies"], e["paired"]
        best = paired["learned_minus_best_nonlearned"]
        served = paired.get("ppo_served_minus_best_nonlearned", {})
        fpr = [c["fpr_holdout"] for c in pol.get("ppo_served", {}).get("guard_calibration") or [] if c]
        fb = (e.get("ood_fallback_rate") or {}).get("mean")
        met = "n/a" if not served else ("met" if served["hi"] >= 0 else "missed")
        row = (f"| {name.removeprefix('lowo_')} | {best['baseline']} {pol[best['baseline']]['mean']:.3f} | "
               f"{pol['ppo']['mean']:.3f} | {fmt(best)} | {pol.get('ppo_served', {}).get('mean', float('nan')):.3f} | "
               f"{fmt(served)} | {'n/a' if fb is None else f'{fb:.3f}'} | "
               f"{f'{min(fpr):.3f}–{max(fpr):.3f}' if fpr else 'n/a'} | {met} |")
        if calibrated:
            cal = pol.get("ppo_calibrated")
            d = paired.get("ppo_calibrated_minus_best_nonlearned", {})
            if cal is None:
                row += " n/a | n/a | n/a | n/a | n/a |"
            else:
                offsets = ", ".join(f"{t['chosen']:+g}" + (f" {t['chosen_fallback']}" if "chosen_fallback" in t else "")
                                    for t in cal.get("action_bias_tuning") or [])  # the fallback: run 5 on
                share = " → ".join(f"{pol[p]['metrics'].get('strong_share', {}).get('mean', float('nan')):.2f}"
                                   for p in ("ppo_served", "ppo_calibrated"))
                row += (f" {cal['mean']:.3f} | {fmt(d)} | {offsets} | {share} | "
                        f"{'met' if d and d['hi'] >= 0 else 'missed'} |")
        print(row)

if __name__ == "__main__":
    main()
