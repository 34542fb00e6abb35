"""``rlroute quickstart`` (``make quickstart``): train, evaluate against every baseline, export, report.

Steps, all on the built-in workload (no ../shared/data needed):

1. train PPO with ``experiment=quickstart`` (a few minutes on 2 cores) into ``<out>/train``;
2. evaluate it and every baseline (all-large, all-small, all-hybrid, random, round-robin, the seed
   heuristic, cache-aware, threshold router, quality and reward oracles) on the ``test`` split over the
   experiment's test seeds with the evaluation harness;
3. export the policy to ONNX (``rlroute.export``) into ``<out>/policy``;
4. write ``<out>/report.md`` with the table (95 % intervals over test seeds), the Pareto and action-mix
   PNGs, and print where it is. With ``logger=wandb`` the same run gets the tables, plots and the exported
   policy as an artifact.

Usage::

    rlroute quickstart [hydra overrides, e.g. logger=wandb agent.total_timesteps=20000]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rlroute.paths import CONF_DIR


def compose(overrides: list[str]) -> DictConfig:
    """The root config with ``experiment=quickstart`` and ``overrides`` (Hydra compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=["experiment=quickstart", *overrides])


def export(cfg: DictConfig, run_dir: Path, out: Path) -> Path | None:
    """Export the trained policy to ONNX; ``None`` (with the reason printed) when export is unavailable."""
    try:
        from rlroute.export.cli import export_policy
    except ImportError as exc:
        print(f"quickstart: export skipped ({exc})", file=sys.stderr)
        return None
    export_policy(out=out, cfg=cfg, run_dir=run_dir, n_verify=int(cfg.quickstart.export_verify), overwrite=True)
    return out


def report(cfg: DictConfig, out: Path, rows: list[Any], metrics: dict[str, Any], exported: Path | None,
           seconds: dict[str, float]) -> Path:
    """Write ``report.md`` (+ PNGs) and return its path."""
    from rlroute.train.compare import gap_recovered, markdown_table, paired_difference, write_results

    split = str(cfg.quickstart.split)
    paths = write_results(rows, out, f"results_{split}", f"quickstart: PPO vs baselines ({split} split)")
    by = {r.policy: r for r in rows}
    ppo = by["ppo"].mean("reward")
    beats = {b: ppo > by[b].mean("reward") for b in ("all_small", "all_large") if b in by}
    best, recovered, why = gap_recovered(rows)
    lines = [
        "# rlroute quickstart report",
        "",
        f"Trained `{metrics['algo']}` for {metrics['total_timesteps']} decisions in {metrics['train_seconds']:.0f} s "
        f"(seed {metrics['seed']}, selected snapshot: {metrics['selected']}, best validation reward "
        f"{metrics['objective']:.4f}). Evaluated on the `{split}` split, seeds {list(cfg.quickstart.test_seeds)}, "
        f"episode length {cfg.episode_length}; intervals are 95 % percentile bootstrap over test seeds "
        "(rlroute/eval/stats.py); paired differences resample the same seeds for both policies.",
        "",
        f"Reward per decision: PPO {ppo:.4f}; all-small {by['all_small'].mean('reward'):.4f}; "
        f"all-large {by['all_large'].mean('reward'):.4f}. Beats all-small: **{beats.get('all_small')}**, "
        f"beats all-large: **{beats.get('all_large')}**.",
        "Paired over test seeds (same requests): PPO − all-small reward "
        f"{paired_difference(by['ppo'], by['all_small']).fmt(4)}, PPO − all-large "
        f"{paired_difference(by['ppo'], by['all_large']).fmt(4)}.",
        f"Best heuristic by reward on these seeds: `{best}`; PPO − `{best}` paired: "
        + (f"**{paired_difference(by['ppo'], by[best]).fmt(4)}**" if best in by else "n/a")
        + "; share of its reward gap to the reward oracle (hindsight, simulator forks) recovered by PPO: "
        + (f"{recovered:.2f}." if recovered is not None else f"not defined ({why})."),
        "",
        markdown_table(rows),
        "",
        f"![Pareto]({paths['pareto'].name})",
        "",
        f"![Action mix]({paths['mix'].name})",
        "",
        "## Files",
        f"- training run: `{metrics['run_dir']}` (model.zip, vecnormalize.pkl, config.yaml, metrics.json)",
        f"- exported policy: `{exported}`" if exported else "- exported policy: not produced",
        f"- timings (s): {json.dumps({k: round(v, 1) for k, v in seconds.items()})}",
        "",
        "Reproduce: `rlroute quickstart` (or `make quickstart`).",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(overrides: list[str], out: Path | None = None, console: Console | None = None) -> Path:
    """The whole quickstart; returns the report's path. Progress and the result go to ``console``."""
    from rlroute.train.compare import BASELINES, baseline_row, learned_row, paired_difference, reference_costs
    from rlroute.train.trainer import train_run

    console = console or Console()
    cfg = compose(overrides)
    out = Path(out or Path("outputs") / "quickstart" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    seconds: dict[str, float] = {}
    console.print(f"[bold]rlroute quickstart[/] -> {out}", soft_wrap=True)
    console.print(f"[1/3] training PPO on {cfg.workload.name} for {int(cfg.agent.total_timesteps):,} decisions")
    t0 = time.perf_counter()
    result = train_run(cfg, out / "train", finish=False)
    seconds["train"] = time.perf_counter() - t0
    console.print(f"      done in {seconds['train']:.0f} s; best validation reward {result.objective:.4f} "
                  f"({result.metrics['selected']} snapshot)")

    t0 = time.perf_counter()
    split, seeds = str(cfg.quickstart.split), [int(s) for s in cfg.quickstart.test_seeds]
    with Progress(TextColumn("[2/3] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(f"evaluating PPO + {len(BASELINES)} baselines", total=len(BASELINES) + 2)
        reference = reference_costs(cfg, split, seeds)
        bar.advance(task)
        rows = [learned_row([result.run_dir], cfg, split, seeds, reference)]
        bar.advance(task)
        for name in BASELINES:
            rows.append(baseline_row(name, cfg, split, seeds, reference))
            bar.advance(task)
    seconds["evaluate"] = time.perf_counter() - t0

    console.print(f"[3/3] exporting to ONNX (checked against torch on {int(cfg.quickstart.export_verify):,} obs)")
    t0 = time.perf_counter()
    exported = export(cfg, result.run_dir, out / "policy")
    seconds["export"] = time.perf_counter() - t0
    metrics = {**result.metrics, "run_dir": str(result.run_dir)}
    path = report(cfg, out, rows, metrics, exported, seconds)

    tracker = result.tracker
    if tracker is not None:
        tracker.log_table(f"eval/{split}", [{"policy": r.policy, **{k: v.mean for k, v in r.values.items()}}
                                            for r in rows])
        tracker.log_image("eval/pareto", out / f"results_{split}_pareto.png")
        tracker.log_image("eval/action_mix", out / f"results_{split}_mix.png")
        tracker.log_artifact(exported or result.run_dir, f"policy-{result.metrics['run_name']}")
        tracker.finish()
    by = {r.policy: r for r in rows}
    console.print(f"[bold]result[/] (reward per decision, {split} split, {len(seeds)} seeds): "
                  f"PPO {by['ppo'].mean('reward'):.4f}, all-small {by['all_small'].mean('reward'):.4f}, "
                  f"all-large {by['all_large'].mean('reward'):.4f}; PPO - all-small paired, 95 %: "
                  f"{paired_difference(by['ppo'], by['all_small']).fmt(4)}")
    console.print(f"quickstart report: {path}", soft_wrap=True)
    return path


def main() -> None:
    """Console entry: ``rlroute quickstart [overrides]``."""
    run(sys.argv[1:])
