"""``rlroute baselines``: evaluate every baseline on the default workloads; write ``baselines/results/``.

The suite (policies, workloads as Hydra overrides, splits, seeds, episode length) is
``baselines/suite.yaml``. For each workload the runner composes ``conf/config.yaml`` with the workload's
overrides, evaluates all-large first (its per-seed cost is the reference of every other policy's cost
saving), then the rest, and writes per-workload records, tables and plots plus a combined
``baselines/results/README.md`` / ``results.json`` / ``results.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from rlroute.eval.report import markdown_table, side_by_side, summary_rows, write_report, write_rows_csv
from rlroute.eval.run import EvalResult, default_env_factory, evaluate
from rlroute.paths import BASELINE_SUITE, CONF_DIR, IN_CHECKOUT, REPO

log = logging.getLogger(__name__)


def load_suite(path: Path) -> dict[str, Any]:
    """Read and check ``suite.yaml``; errors name the file and the field."""
    try:
        suite = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the baseline suite ({exc})") from exc
    if not isinstance(suite, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for key, kind in (("policies", list), ("seeds", list), ("workloads", list), ("episode_length", int)):
        if not isinstance(suite.get(key), kind):
            raise ValueError(f"{path}: `{key}` must be a {kind.__name__}, got {suite.get(key)!r}")
    from rlroute.datasets import registry

    for k, wl in enumerate(suite["workloads"] + suite.get("fallback", [])):
        if not isinstance(wl, dict) or not wl.get("name") or not isinstance(wl.get("overrides"), list):
            raise ValueError(f"{path}: workloads[{k}] needs `name` and a list of `overrides`, got {wl!r}")
        needs = wl.get("needs_data", [])
        if not isinstance(needs, list) or not set(needs) <= set(registry()):
            raise ValueError(f"{path}: workloads[{k}] `needs_data` must be a list of data sets from "
                             f"{list(registry())} (rlroute data list), got {needs!r}")
    return suite


def compose(overrides: list[str], config_name: str = "config") -> Any:
    """``conf/<config_name>.yaml`` composed with ``overrides`` (no Hydra run folder is created)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def select_workloads(suite: dict[str, Any], only: list[str] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """The workloads to run and notes on substitutions (a data set in ``needs_data`` absent → fallback)."""
    from rlroute.datasets import registry
    from rlroute.datasets.store import presence

    chosen, notes = [], []
    skipped = False
    for wl in suite["workloads"]:
        if only and wl["name"] not in only:
            continue
        absent = [n for n in wl.get("needs_data", []) if not presence(registry()[n]).complete]
        if absent:
            skipped = True
            notes.append(f"{wl['name']}: skipped, data set(s) {', '.join(absent)} absent "
                         f"(`rlroute data download {' '.join(absent)}`)")
            continue
        chosen.append(wl)
    if skipped:
        for wl in suite.get("fallback", []):
            if not any(w["name"] == wl["name"] for w in chosen):
                chosen.append(wl)
                notes.append(f"{wl['name']}: built-in fallback workload used because data sets are absent")
    return chosen, notes


def run_workload(wl: dict[str, Any], policies: list[str], seeds: list[int], episode_length: int,
                 out_dir: Path) -> list[EvalResult]:
    """All policies × splits × seeds on one workload; writes its folder and returns the results."""
    cfg = compose([*wl["overrides"], f"episode_length={episode_length}"])
    ordered = ["all_large", *[p for p in policies if p != "all_large"]]
    results: list[EvalResult] = []
    for split in wl.get("splits", ["test"]):
        reference: dict[int, float] | None = None
        by_name: dict[str, EvalResult] = {}
        env = default_env_factory(cfg, split)  # built once per split (quality fit, workload load), reset per seed
        for name in ordered:
            t0 = time.perf_counter()
            res = evaluate(name, cfg, split, seeds, reference_cost=reference, env=env)
            res.workload = wl["name"]
            if name == "all_large":
                reference = {s: sum(r["cost"] for r in res.records if r["seed"] == s) for s in seeds}
            by_name[name] = res
            log.info("%s/%s/%s: %.1f s", wl["name"], split, name, time.perf_counter() - t0)
            print(f"  {wl['name']:<14} {split:<13} {name:<12} {time.perf_counter() - t0:6.1f} s", flush=True)
        env.close()
        results += [by_name[p] for p in policies if p in by_name]
    meta = {"workload": wl, "seeds": seeds, "episode_length": episode_length, "policies": policies}
    write_report(results, out_dir / wl["name"], wl["name"], meta, records_name="records.csv.gz")
    return results


def write_combined(all_results: list[EvalResult], workloads: list[dict[str, Any]], notes: list[str],
                   suite: dict[str, Any], out_dir: Path, command: str, seconds: float) -> None:
    """``README.md`` with every workload's table, and ``results.json`` / ``results.csv``."""
    lines = ["# Baseline reference results", "",
             f"Produced by `{command}` from `baselines/suite.yaml` in {seconds / 60:.1f} minutes (wall clock, 2-core machine).",
             f"Seeds {suite['seeds']}, {suite['episode_length']} decisions per episode; every cell is the mean "
             "± the 95 % Student-t half-width over seeds. Quality = share of acceptable answers; cost in the "
             "simulator's cost-model units; saving vs the all-large policy on the same seeds; PGR/APGR/CPT as "
             "defined in `rlroute/eval/metrics.py` (strong calls = large + hybrid); mix = share large/small/hybrid.",
             ""]
    lines += [f"- note: {n}" for n in notes] + ([""] if notes else [])
    for wl in workloads:
        res = [r for r in all_results if r.workload == wl["name"]]
        lines += [f"## {wl['name']}", "", f"overrides: `{' '.join(wl['overrides'])}`", "", markdown_table(res), ""]
        splits = wl.get("splits", ["test"])
        if len(splits) > 1:
            lines += ["In-domain vs cross-domain (held-out subjects):", "",
                      side_by_side(res, splits, ("quality", "apgr", "cost_saving")), ""]
        lines += [f"![pareto]({wl['name']}/pareto{'' if len(splits) == 1 else '_' + splits[0]}.png)", ""]
    (out_dir / "README.md").write_text("\n".join(lines))
    rows = summary_rows(all_results)
    (out_dir / "results.json").write_text(json.dumps({"suite": suite, "notes": notes, "command": command,
                                                      "results": rows}, indent=2, default=str))
    write_rows_csv(rows, out_dir / "results.csv")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rlroute baselines`` (options: see ``--help``)."""
    parser = argparse.ArgumentParser(prog="rlroute baselines", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=BASELINE_SUITE)
    parser.add_argument("--out", type=Path, help="output folder (default: baselines/results of the checkout, "
                        "or of the current folder for an installed rlroute)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the suite's seeds")
    parser.add_argument("--episode-length", type=int, help="override the suite's decisions per episode")
    parser.add_argument("--policies", nargs="+", help="subset of the suite's policies")
    parser.add_argument("--workloads", nargs="+", help="subset of the suite's workloads (by name)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.out = args.out or (REPO if IN_CHECKOUT else Path.cwd()) / "baselines" / "results"
    logging.basicConfig(level=logging.WARNING)
    suite = load_suite(args.suite)
    if args.seeds:
        suite["seeds"] = args.seeds
    if args.episode_length:
        suite["episode_length"] = args.episode_length
    policies = [str(p) for p in (args.policies or suite["policies"])]
    workloads, notes = select_workloads(suite, args.workloads)
    if not workloads:
        raise SystemExit(f"rlroute baselines: no workload selected from {args.suite} ({args.workloads})")
    args.out.mkdir(parents=True, exist_ok=True)
    command = "rlroute baselines " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    all_results: list[EvalResult] = []
    done: list[dict[str, Any]] = []
    failed = 0
    for wl in workloads:
        try:
            all_results += run_workload(wl, policies, [int(s) for s in suite["seeds"]],
                                        int(suite["episode_length"]), args.out)
            done.append(wl)
        except Exception as exc:  # one broken workload must not lose the others' results; reported below
            failed += 1
            notes.append(f"{wl['name']}: FAILED — {type(exc).__name__}: {exc}")
            log.exception("workload %s failed", wl["name"])
    write_combined(all_results, done, notes, suite, args.out, command.strip(), time.perf_counter() - t0)
    print((args.out / "README.md").read_text())
    return 1 if failed else 0
