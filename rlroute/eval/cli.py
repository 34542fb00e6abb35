"""``rlroute eval``: evaluate one policy, several, or the saved policies of training runs; write a report.

Thin Hydra shell (``conf/eval.yaml``) over :func:`run_eval`, which is plain and testable. Output (in the
Hydra run folder, ``out_dir``): ``records.csv`` (one row per request), ``summary.json`` / ``summary.csv``
(mean and 95 % interval of every metric), ``summary.md`` and the PNG plots.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rlroute.eval.report import write_report
from rlroute.eval.run import (
    EvalResult,
    all_large_costs,
    default_env_factory,
    evaluate,
    summarise,
    workload_name,
)
from rlroute.paths import CONF_DIR
from rlroute.policies.registry import make_policy

log = logging.getLogger(__name__)


def policy_specs(cfg: Any) -> list[Any]:
    """What to evaluate: ``cfg.runs`` (SB3 run folders), else ``cfg.policies`` (names), else ``cfg.policy``."""
    if cfg.get("runs"):
        specs = []
        for path in cfg.runs:
            folder = Path(str(path))
            if not folder.exists():
                raise FileNotFoundError(f"eval runs: {folder} does not exist (expected a `rlroute train` run folder)")
            specs.append(make_policy("sb3", path=str(folder), name=f"ppo[{folder.name}]"))
        return specs
    if cfg.get("policies"):
        return [str(name) for name in cfg.policies]
    if cfg.get("policy") is None:
        raise ValueError("eval: set policy=<name>, policies=[...] or runs=[...]")
    return [cfg.policy]


def aggregate_runs(results: list[EvalResult], confidence: float = 0.95) -> EvalResult:
    """One row for several training runs: each run's seed-mean is a replicate; the interval is over runs."""
    per_run = []
    for res in results:
        keys = res.per_seed[0].keys()
        per_run.append({k: sum(m[k] for m in res.per_seed) / len(res.per_seed) for k in keys})
    records = [r for res in results for r in res.records]
    return EvalResult(f"ppo ({len(results)} runs)", results[0].split, records, per_run,
                      summarise(per_run, confidence=confidence), results[0].workload)


def run_eval(cfg: Any, out_dir: Path | None = None) -> list[EvalResult]:
    """Evaluate every policy of ``cfg`` on every split and write the report to ``out_dir``."""
    seeds = [int(s) for s in cfg.seeds]
    splits = [str(s) for s in cfg.splits]
    specs = policy_specs(cfg)
    windows = int(cfg.windows) if cfg.get("windows") is not None else None
    results: list[EvalResult] = []
    for split in splits:
        env = default_env_factory(cfg, split)  # one env per split, reused by every policy (reset per seed)
        reference = all_large_costs(cfg, split, seeds, env=env, windows=windows)
        split_results = [evaluate(spec, cfg, split, seeds, reference_cost=reference, ci=str(cfg.get("ci", "t")),
                                  env=env, windows=windows) for spec in specs]
        env.close()
        if cfg.get("runs") and len(split_results) > 1:
            split_results.append(aggregate_runs(split_results, float(cfg.get("confidence", 0.95))))
        results += split_results
    out = Path(out_dir or cfg.out_dir)
    title = str(cfg.get("title") or workload_name(cfg) or "evaluation")
    meta = {"seeds": seeds, "splits": splits, "config": OmegaConf.to_container(cfg, resolve=False)}
    text = write_report(results, out, title, meta)
    print(text)
    print(f"\nwrote {out}/summary.md, summary.json, records.csv and plots")
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Entry point of ``rlroute eval``."""
    run_eval(cfg)
