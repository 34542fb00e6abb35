"""Trained policies vs the baselines: one table with 95 % intervals, a Pareto plot, an action-mix plot.

Used by ``rlroute quickstart``, by the ``ppo_vs_baselines`` study and to aggregate multirun folders
(``python -m rlroute.train.compare multirun/train/<experiment>/<time>``). Every policy runs through the
evaluation harness (``rlroute.eval.run.evaluate``) on the same test seeds with the same all-large reference
cost. Intervals, the same for every row: the two-way percentile bootstrap of :mod:`rlroute.eval.stats`
over test seeds and (for a learned policy trained with several seeds) training runs, so a learned row's
interval holds both the traffic's and the re-training's variance; paired differences resample the same
test seeds for both policies. APGR is RouteLLM's, on the pooled requests, averaged over runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.eval.stats import Interval, paired_bootstrap

METRICS: tuple[str, ...] = ("reward", "quality", "cost_saving", "ttft_p99", "cache_hit_rate", "apgr",
                            "mix_large", "mix_small", "mix_hybrid")
BASELINES: tuple[str, ...] = ("all_large", "all_small", "all_hybrid", "random", "round_robin", "heuristic",
                              "cache_aware", "length_cut", "threshold", "quality_oracle", "reward_oracle")
HEURISTICS: tuple[str, ...] = ("random", "round_robin", "all_large", "all_small", "all_hybrid", "heuristic",
                               "cache_aware", "length_cut", "threshold")


@dataclass
class Row:
    """One policy on one split: an interval per metric."""

    policy: str
    split: str
    values: dict[str, Interval]
    per_seed: list[dict[str, float]] | None = None  # per test seed (averaged over runs)
    per_run: list[list[dict[str, float]]] | None = None  # [run][test seed] metrics, for paired tests

    def matrix(self, key: str) -> np.ndarray:
        """``[run, test seed]`` values of ``key``."""
        if not self.per_run:
            raise ValueError(f"row {self.policy}: no per-run values")
        return np.array([[m[key] for m in run] for run in self.per_run], dtype=np.float64)

    def mean(self, key: str) -> float:
        """The metric's mean (NaN when absent)."""
        iv = self.values.get(key)
        return iv.mean if iv is not None else math.nan

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"policy": self.policy, "split": self.split,
                "values": {k: v.as_dict() for k, v in self.values.items()}}


def reference_costs(cfg: Any, split: str, seeds: Sequence[int]) -> dict[int, float]:
    """All-large total cost per seed: the denominator of every policy's cost saving."""
    from rlroute.eval.run import all_large_costs

    return all_large_costs(cfg, split, [int(s) for s in seeds])


def _row(name: str, split: str, results: Sequence[Any]) -> Row:
    """A row from one evaluation result per training run (one for a baseline), all on the same seeds."""
    from rlroute.study.results import apgr_interval, interval_or_nan

    per_run = [[{k: float(m[k]) for k in METRICS if k in m} for m in res.per_seed] for res in results]
    row = Row(name, split, {}, per_run=per_run)
    row.values = {k: interval_or_nan(row.matrix(k)) for k in METRICS if k != "apgr"}
    row.values["apgr"] = apgr_interval(results)
    n = len(per_run[0])
    row.per_seed = [{k: float(np.mean([run[i][k] for run in per_run])) for k in per_run[0][i]} for i in range(n)]
    return row


def baseline_row(name: str, cfg: Any, split: str, seeds: Sequence[int], reference: dict[int, float]) -> Row:
    """A registry baseline evaluated over ``seeds``."""
    from rlroute.eval.run import evaluate

    return _row(name, split, [evaluate(name, cfg, split, [int(s) for s in seeds], reference_cost=reference)])


def learned_row(
    run_dirs: Sequence[str | Path],
    cfg: Any,
    split: str,
    seeds: Sequence[int],
    reference: dict[int, float],
    name: str = "ppo",
    zero_blocks: Sequence[str] = (),
) -> Row:
    """Trained run folders evaluated over ``seeds``; the interval covers runs and seeds (module doc)."""
    from rlroute.eval.run import evaluate
    from rlroute.policies.sb3 import SB3Policy

    if not run_dirs:
        raise ValueError("learned_row: no run folders given")
    results = [evaluate(SB3Policy(run, zero_blocks=list(zero_blocks), name=name), cfg, split,
                        [int(s) for s in seeds], reference_cost=reference) for run in run_dirs]
    return _row(name, split, results)


def paired_difference(a: Row, b: Row, key: str = "reward") -> Interval:
    """``a - b`` on ``key``, paired by test seed (both rows evaluated on the same seeds): the seeds' shared
    workload variation cancels, so this interval is much tighter than the rows' own intervals."""
    if not a.per_run or not b.per_run or len(a.per_run[0]) != len(b.per_run[0]):
        raise ValueError(f"paired_difference: {a.policy} and {b.policy} lack per-seed values on the same seeds")
    return paired_bootstrap(a.matrix(key), b.matrix(key))


def find_runs(folders: Sequence[str | Path]) -> list[Path]:
    """Run folders (``model.zip``, ``config.yaml`` and ``metrics.json``) at or below ``folders``, sorted."""
    runs: set[Path] = set()
    for folder in folders:
        root = Path(folder)
        if not root.exists():
            raise FileNotFoundError(f"no such run folder or multirun folder: {root}")
        candidates = [root] if (root / "model.zip").is_file() else [p.parent for p in root.rglob("model.zip")]
        runs.update(p for p in candidates if (p / "metrics.json").is_file() and (p / "config.yaml").is_file())
    if not runs:
        raise FileNotFoundError(f"no run folders (model.zip + metrics.json) under {list(map(str, folders))}")
    return sorted(runs)


def gap_recovered(rows: Sequence[Row], learned: str = "ppo") -> tuple[str, float | None, str]:
    """Best heuristic by reward, the share of its reward gap to the reward oracle the learned policy
    recovers, and why that share is ``None`` when it is.

    The reference is ``reward_oracle`` (hindsight, forks the simulator per action: the upper reference of
    issue 11), and the share counts only when it scores at least as high as every row (every training run)
    on every test seed (:func:`rlroute.eval.references.oracle_dominates`): a greedy per-request fork is not a
    bound under congestion, and then there is no gap to speak of.
    """
    from rlroute.eval.references import ORACLE, Dominance, oracle_dominates
    from rlroute.eval.references import gap_recovered as share

    by_name = {r.policy: r for r in rows}
    heur = [r for r in rows if r.policy in HEURISTICS]
    if learned not in by_name or not heur:
        return "", None, f"no {learned} row or no heuristic row"
    best = max(heur, key=lambda r: r.mean("reward"))
    if ORACLE not in by_name:
        return best.policy, None, f"no {ORACLE} row"
    per_run = {f"{r.policy}[{j}]" if r.policy != ORACLE else ORACLE: [float(x) for x in row]
               for r in rows for j, row in enumerate(r.matrix("reward"))}
    dominance: Dominance = oracle_dominates(per_run, ORACLE)
    value = share(by_name[learned].mean("reward"), best.mean("reward"), by_name[ORACLE].mean("reward"), dominance)
    why = dominance.reason if not dominance.ok else ("" if value is not None else "the oracle does not beat it")
    return best.policy, value, why


def markdown_table(rows: Sequence[Row], metrics: Sequence[str] = METRICS, digits: int = 3) -> str:
    """Rows as a markdown table of ``mean ± half-width``."""
    head = "| policy | " + " | ".join(metrics) + " |"
    sep = "|---" * (len(metrics) + 1) + "|"
    body = ["| " + r.policy + " | " + " | ".join(
        r.values[m].fmt(digits) if m in r.values else "n/a" for m in metrics) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def pareto_plot(rows: Sequence[Row], path: Path, title: str) -> Path:
    """Cost saving vs quality, one point (with 95 % error bars) per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        x, y = r.values.get("cost_saving"), r.values.get("quality")
        if x is None or y is None or not (math.isfinite(x.mean) and math.isfinite(y.mean)):
            continue
        xerr = x.half_width if math.isfinite(x.half_width) else 0.0
        yerr = y.half_width if math.isfinite(y.half_width) else 0.0
        learned = r.policy not in BASELINES
        ax.errorbar(x.mean, y.mean, xerr=xerr, yerr=yerr, fmt="*" if learned else "o",
                    ms=12 if learned else 6, capsize=2, label=r.policy)
    ax.set_xlabel("cost saving vs all-large")
    ax.set_ylabel("quality (share of acceptable answers)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def mix_plot(rows: Sequence[Row], path: Path, title: str) -> Path:
    """Stacked action mix per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    bottom = np.zeros(len(rows))
    for key in ("mix_large", "mix_small", "mix_hybrid"):
        vals = np.array([r.mean(key) for r in rows])
        vals = np.nan_to_num(vals)
        ax.bar([r.policy for r in rows], vals, bottom=bottom, label=key.split("_")[1])
        bottom += vals
    ax.set_ylabel("share of decisions")
    ax.set_title(title)
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(rows: Sequence[Row], out_dir: Path, tag: str, title: str) -> dict[str, Path]:
    """``<tag>.md`` table, ``<tag>.json`` values, ``<tag>_pareto.png`` and ``<tag>_mix.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": out_dir / f"{tag}.md",
        "json": out_dir / f"{tag}.json",
        "pareto": pareto_plot(rows, out_dir / f"{tag}_pareto.png", title),
        "mix": mix_plot(rows, out_dir / f"{tag}_mix.png", title),
    }
    paths["table"].write_text(f"### {title}\n\n{markdown_table(rows)}\n")
    paths["json"].write_text(json.dumps([r.as_dict() for r in rows], indent=2, default=float) + "\n")
    return paths
