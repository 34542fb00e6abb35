"""From per-window evaluations to the study's numbers: ``results.json`` entries, one table, two plots.

A policy's evaluation is a matrix ``[training run, test window]`` of :func:`rlroute.eval.run.evaluate`
results (one row for a non-learned policy). Everything here is arithmetic on those matrices with the
paired two-way bootstrap of :mod:`rlroute.eval.stats`; the schema is documented in
``experiments/scenarios/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.eval.metrics import pooled_routing_arrays, routing_metrics
from rlroute.eval.references import ORACLE, Dominance, gap_recovered, oracle_dominates
from rlroute.eval.run import EvalResult
from rlroute.eval.stats import Interval, cluster_bootstrap, paired_bootstrap

PRIMARY = "reward"
METRICS: tuple[str, ...] = ("reward", "quality", "cost_saving", "mix_large", "mix_hybrid", "strong_share",
                            "ttft_p99", "slo_attainment", "cache_hit_rate")
GUARD_METRICS: tuple[str, ...] = ("fallback_rate", "ood_rate")
ROLES = ("learned", "nonlearned", "competitor", "reference")


@dataclass
class PolicyRuns:
    """One policy on one scenario: an :class:`EvalResult` per training run (one for a non-learned policy),
    each over the same test windows."""

    name: str
    role: str
    runs: list[EvalResult]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"policy {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if not self.runs:
            raise ValueError(f"policy {self.name!r}: no evaluation runs")
        n = {len(r.per_seed) for r in self.runs}
        if len(n) != 1:
            raise ValueError(f"policy {self.name!r}: runs cover different numbers of test windows {sorted(n)}")

    def matrix(self, key: str = PRIMARY) -> np.ndarray:
        """``[run, window]`` values of ``key``."""
        return np.array([[m[key] for m in r.per_seed] for r in self.runs], dtype=np.float64)

    def per_seed(self, key: str = PRIMARY) -> list[float]:
        """Per test window: the mean over training runs."""
        return [float(x) for x in self.matrix(key).mean(axis=0)]


def _iv(iv: Interval) -> dict[str, float | None]:
    def num(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    return {"mean": num(iv.mean), "lo": num(iv.low), "hi": num(iv.high)}


def interval_or_nan(
    matrix: np.ndarray, other: np.ndarray | None = None, n_boot: int = 4000, seed: int = 0
) -> Interval:
    """Two-way bootstrap (``rlroute.eval.stats.paired_bootstrap``); a metric with NaNs (e.g. a cost saving
    without a reference) gives an undefined interval instead of an error."""
    if not np.isfinite(matrix).all() or (other is not None and not np.isfinite(other).all()):
        return Interval(float("nan"), float("nan"), float("nan"), matrix.shape[1])
    return paired_bootstrap(matrix, other, np.random.default_rng(seed), n_boot)


def apgr_interval(runs: Sequence[EvalResult], n_boot: int = 300, seed: int = 0) -> Interval:
    """RouteLLM's APGR on the pooled requests of all windows, averaged over training runs; the interval
    resamples windows (the same draw for every run) and runs. Undefined for a policy without a score."""
    arrays = []
    for res in runs:
        action, ok, scores = pooled_routing_arrays(res.records)
        if not np.isfinite(scores).all():
            return Interval(float("nan"), float("nan"), float("nan"), len(res.per_seed))
        windows = np.array([r["seed"] for r in res.records])
        arrays.append((action, ok, scores, windows))
    labels = np.unique(arrays[0][3])
    members = [[np.flatnonzero(w == lab) for lab in labels] for *_, w in arrays]

    def stat(run_idx: np.ndarray, win_idx: np.ndarray) -> float:
        vals = []
        for j in run_idx:
            action, ok, scores, _ = arrays[j]
            idx = np.concatenate([members[j][i] for i in win_idx])
            vals.append(routing_metrics(action[idx], ok[idx], scores[idx])["apgr"])
        return float(np.mean(vals))

    point = stat(np.arange(len(arrays)), np.arange(labels.size))
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, len(arrays), len(arrays)), rng.integers(0, labels.size, labels.size))
                      for _ in range(n_boot)])
    draws = draws[np.isfinite(draws)]
    if draws.size == 0 or labels.size < 2:
        return Interval(point, float("nan"), float("nan"), int(labels.size))
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return Interval(point, float(lo), float(hi), int(labels.size))


def prompt_clustered_difference(
    learned: PolicyRuns, baseline: PolicyRuns, key: str = PRIMARY, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any] | None:
    """Request-level ``learned − baseline`` on ``key`` (each request's value, learned averaged over its
    runs), paired by (window, request id), bootstrapped by prompt text (``prompt_id``; a request without
    text is its own cluster). ``None`` when the records carry no per-request ``key``."""

    def values(res: EvalResult) -> dict[tuple[int, int], tuple[float, str]]:
        return {(int(r["seed"]), int(r["request_id"])): (float(r[key]), str(r.get("prompt_id") or ""))
                for r in res.records}

    if not all(key in res.records[0] for p in (learned, baseline) for res in p.runs if res.records):
        return None
    ours = [values(res) for res in learned.runs]
    theirs = values(baseline.runs[0])
    if not all(math.isfinite(v) for table in (*ours, theirs) for v, _ in table.values()):
        return None  # e.g. reward.credit: park has no per-request reward
    common = sorted(set(theirs).intersection(*ours))
    if not common:
        return None
    diffs = [float(np.mean([o[k][0] for o in ours])) - theirs[k][0] for k in common]
    clusters = [theirs[k][1] or f"request {k}" for k in common]
    iv = cluster_bootstrap(diffs, clusters, np.random.default_rng(seed), n_boot)
    return {"baseline": baseline.name, **_iv(iv), "clusters": iv.n, "requests": len(common)}


def per_run_scores(policies: Sequence[PolicyRuns], key: str = PRIMARY) -> dict[str, list[float]]:
    """``{policy: per-window values}`` with each training run of a learned policy as its own entry (the
    oracle must bound every run, not only their mean), for :func:`rlroute.eval.references.oracle_dominates`."""
    out: dict[str, list[float]] = {}
    for p in policies:
        m = p.matrix(key)
        for j, row in enumerate(m):
            out[p.name if m.shape[0] == 1 else f"{p.name}[run {j}]"] = [float(x) for x in row]
    return out


def within_budget(p: PolicyRuns, large_share: float) -> bool:
    """A policy meets a large-model budget when its share of requests on the large model (``large`` or
    ``hybrid``: ``strong_share``), averaged over its training runs and test windows, is at most
    ``large_share`` -- the expected-share constraint the Lagrangian of ``rlroute/train/budget.py`` trains
    for (a window may overshoot by chance)."""
    return float(p.matrix("strong_share").mean()) <= large_share + 1e-9


def scenario_entry(
    policies: Sequence[PolicyRuns], learned: str = "ppo", n_boot: int = 4000, budget_share: float | None = None
) -> dict[str, Any]:
    """The ``scenarios.<name>`` entry of ``results.json`` (schema in the study README).

    With ``budget_share`` (a budgeted scenario's ``budget.large_share``) the scenario reward does not charge
    the budget, so a policy over it is infeasible, not better: every row says ``within_budget``, the best
    non-learned baseline is the best *feasible* one, and a learned policy over budget is named in the note.
    """
    by = {p.name: p for p in policies}
    if learned not in by:
        raise ValueError(f"scenario entry: the learned policy {learned!r} was not evaluated")
    ours = by[learned].matrix()
    entry: dict[str, Any] = {"policies": {}, "paired": {"learned_minus": {}}}
    for k, p in enumerate(policies):
        m = p.matrix()
        row: dict[str, Any] = {"role": p.role, "per_seed": p.per_seed(), **_iv(interval_or_nan(m, None, n_boot, k))}
        row["metrics"] = {key: _iv(interval_or_nan(p.matrix(key), None, n_boot, k)) for key in METRICS}
        for key in GUARD_METRICS:  # a guarded policy (the served export): how often its guard refused
            if key in p.runs[0].per_seed[0]:
                row["metrics"][key] = _iv(interval_or_nan(p.matrix(key), None, n_boot, k))
        row["apgr"] = _iv(apgr_interval(p.runs))
        pgrs = [r.summary["pgr"].mean for r in p.runs if math.isfinite(r.summary["pgr"].mean)]
        row["pgr_operating_point"] = float(np.mean(pgrs)) if pgrs else None
        if len(p.runs) > 1:
            row["per_run"] = m.tolist()
        if p.note:
            row["note"] = p.note
        row.update(p.extra)
        entry["policies"][p.name] = row
        if p.name != learned:
            entry["paired"]["learned_minus"][p.name] = _iv(interval_or_nan(ours, m, n_boot, 100 + k))
    nonlearned = [p for p in policies if p.role == "nonlearned"]
    notes = []
    if budget_share is not None:
        feasible = {p.name: within_budget(p, budget_share) for p in policies}
        for name, ok in feasible.items():
            entry["policies"][name]["within_budget"] = ok
        entry["budget"] = {"large_share": budget_share, "over_budget": sorted(n for n, ok in feasible.items() if not ok)}
        nonlearned = [p for p in nonlearned if feasible[p.name]]
        if not feasible[learned]:
            notes.append(f"{learned} exceeds the large-model budget ({budget_share:.0%}): its differences are not wins")
    best = max(nonlearned, key=lambda p: float(p.matrix().mean())) if nonlearned else None
    if best is not None:
        diff = interval_or_nan(ours, best.matrix(), n_boot, 999)
        entry["paired"]["learned_minus_best_nonlearned"] = {"baseline": best.name, **_iv(diff)}
        for p in policies:  # another form of the learned policy (the served export): the same comparison
            if p.role == "learned" and p.name != learned:
                diff = interval_or_nan(p.matrix(), best.matrix(), n_boot, 998)
                entry["paired"][f"{p.name}_minus_best_nonlearned"] = {"baseline": best.name, **_iv(diff)}
    gaps: dict[str, Any] = {"reward_oracle": None, "supervised": None}
    mean = {p.name: float(p.matrix().mean()) for p in policies}
    if best is not None and ORACLE in by:
        dominance = oracle_dominates(per_run_scores(policies), ORACLE)
        gaps[ORACLE] = gap_recovered(mean[learned], mean[best.name], mean[ORACLE], dominance)
        if not dominance.ok:
            notes.append(dominance.reason)
        elif gaps[ORACLE] is None:
            notes.append("reward oracle does not beat the best non-learned baseline: no gap")
    elif best is not None:
        notes.append("reward_oracle not evaluated (not in the study's references or the registry): gap to it not computed")
    if best is not None and "supervised" in by:
        # The supervised router is a competitor, not a bound: the same ratio, no dominance condition.
        gaps["supervised"] = gap_recovered(mean[learned], mean[best.name], mean["supervised"], Dominance(True))
        if gaps["supervised"] is None:
            notes.append("supervised router does not beat the best non-learned baseline: no gap to recover")
    elif best is not None:
        notes.append("supervised router not evaluated (not in the study's competitors or the registry): gap to it not computed")
    gaps["note"] = " | ".join(notes)
    entry["gap_recovered"] = gaps
    return infeasible_references(entry)


def infeasible_references(entry: dict[str, Any]) -> dict[str, Any]:
    """On a budgeted scenario, a reference over the budget is no reference: its ``gap_recovered`` is
    ``None`` with a note (the reward oracle forks per request and the scenario reward does not charge the
    budget, so it sends nearly everything to the large pool). Works on a ``results.json`` entry, so older
    files can be brought to the same rule."""
    budget = entry.get("budget")
    gaps = entry.get("gap_recovered")
    if not budget or not gaps:
        return entry
    notes = [n for n in str(gaps.get("note") or "").split(" | ") if n]
    for ref in ("reward_oracle", "supervised"):
        if ref in budget.get("over_budget", []) and gaps.get(ref) is not None:
            gaps[ref] = None
            notes.append(f"{ref} exceeds the large-model budget ({budget['large_share']:.0%}): not a reference")
    gaps["note"] = " | ".join(notes)
    return entry


def markdown_table(name: str, entry: Mapping[str, Any], learned: str = "ppo") -> str:
    """One scenario's table: mean [95 % interval] per policy and the paired difference learned − policy."""

    def cell(d: Mapping[str, Any] | None, digits: int = 3) -> str:
        if not d or d.get("mean") is None:
            return "n/a"
        if d.get("lo") is None:
            return f"{d['mean']:.{digits}f}"
        return f"{d['mean']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]"

    cols = ("quality", "cost_saving", "mix_large", "mix_hybrid", "ttft_p99", "slo_attainment")
    head = (f"| policy | role | reward/decision | {learned} − policy (paired) | APGR | "
            + " | ".join(cols) + " |")
    lines = [f"### {name}", "", head, "|---" * (5 + len(cols)) + "|"]
    for pol, row in entry["policies"].items():
        paired = entry["paired"]["learned_minus"].get(pol)
        lines.append(f"| {pol} | {row['role']} | {cell(row)} | {cell(paired) if paired else '—'} | "
                     f"{cell(row['apgr'], 2)} | " + " | ".join(cell(row["metrics"][c]) for c in cols) + " |")
    best = entry["paired"].get("learned_minus_best_nonlearned")
    gaps = entry["gap_recovered"]
    served = [(k.removesuffix("_minus_best_nonlearned"), v) for k, v in entry["paired"].items()
              if k.endswith("_minus_best_nonlearned") and k != "learned_minus_best_nonlearned"]
    lines += ["", f"{learned} − best non-learned (`{best['baseline']}`): {cell(best, 4)}" if best else "",
              *(f"{pol} − best non-learned (`{d['baseline']}`): {cell(d, 4)}; guard fallback rate "
                f"{cell(entry['policies'][pol]['metrics'].get('fallback_rate'), 4)}" for pol, d in served),
              f"gap recovered: vs reward oracle {gaps['reward_oracle']}, vs supervised {gaps['supervised']}"
              + (f" ({gaps['note']})" if gaps.get("note") else ""),
              "", "Intervals: 95 % two-way bootstrap over test windows and training seeds "
              "(rlroute/eval/stats.py). APGR n/a: the policy has no score (one operating point).", ""]
    return "\n".join(lines)


def plots(name: str, entry: Mapping[str, Any], out: Path, learned: str = "ppo") -> list[Path]:
    """``<name>_pareto.png`` (quality vs large share and vs cost saving) and ``<name>_mix.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = entry["policies"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, xkey, xlabel in ((axes[0], "mix_large", "large share"), (axes[1], "cost_saving", "cost saving vs all-large")):
        for pol, row in rows.items():
            x, y = row["metrics"][xkey], row["metrics"]["quality"]
            if x["mean"] is None or y["mean"] is None:
                continue
            xerr = [[x["mean"] - x["lo"]], [x["hi"] - x["mean"]]] if x["lo"] is not None else None
            yerr = [[y["mean"] - y["lo"]], [y["hi"] - y["mean"]]] if y["lo"] is not None else None
            ax.errorbar(x["mean"], y["mean"], xerr=xerr, yerr=yerr, fmt="*" if pol == learned else "o",
                        ms=12 if pol == learned else 6, capsize=2, label=pol)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("quality (share of acceptable answers)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{name}: quality vs large share and cost (95 % intervals)")
    fig.tight_layout()
    pareto = out / f"{name}_pareto.png"
    fig.savefig(pareto, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = list(rows)
    bottom = np.zeros(len(names))
    for key, label in (("mix_large", "large"), ("mix_hybrid", "hybrid")):
        vals = np.nan_to_num(np.array([rows[p]["metrics"][key]["mean"] or 0.0 for p in names], dtype=float))
        ax.bar(names, vals, bottom=bottom, label=label)
        bottom += vals
    ax.bar(names, 1.0 - bottom, bottom=bottom, label="small")
    ax.set_ylabel("share of decisions")
    ax.set_title(f"{name}: action mix (mean over test windows)")
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    mix = out / f"{name}_mix.png"
    fig.savefig(mix, dpi=110)
    plt.close(fig)
    return [pareto, mix]
