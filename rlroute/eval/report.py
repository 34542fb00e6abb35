"""Writing evaluation results: per-request CSV, summary JSON/CSV, markdown tables and PNG plots.

Plots use matplotlib's Agg backend (no display on servers). The Pareto plot puts every policy at its
mean cost per 1000 requests and quality with 95 % intervals over seeds as error bars; the call plot is
RouteLLM's quality vs strong-model-call share, with the threshold router's sweep; the latency plot is
the empirical CDF of TTFT and end-to-end latency per policy.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.eval.run import RECORD_FIELDS, EvalResult

# (metric key, column title, digits) of the markdown table, in order.
TABLE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("reward", "reward/req", 3),
    ("quality", "quality", 3),
    ("cost_per_1k", "cost/1k req", 3),
    ("cost_saving", "saving vs large", 3),
    ("pgr", "PGR", 2),
    ("apgr", "APGR", 2),
    ("cpt50", "CPT(50%)", 2),
    ("cpt80", "CPT(80%)", 2),
    ("ttft_p50", "TTFT p50 s", 3),
    ("ttft_p90", "TTFT p90 s", 3),
    ("ttft_p99", "TTFT p99 s", 3),
    ("e2e_p50", "e2e p50 s", 2),
    ("e2e_p90", "e2e p90 s", 2),
    ("e2e_p99", "e2e p99 s", 2),
    ("cache_hit_rate", "cache hit", 3),
    ("slo_attainment", "SLO att.", 3),
)
MIX = ("mix_large", "mix_small", "mix_hybrid")


def write_records(results: Sequence[EvalResult], path: Path) -> None:
    """All per-request records of ``results`` as one CSV (columns :data:`RECORD_FIELDS`, plus workload).

    Floats are written with 7 significant digits (sub-microsecond for latencies); a ``.gz`` suffix writes
    gzip-compressed CSV (the baseline suite's records run to tens of MB otherwise).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as fh:  # type: ignore[operator]
        writer = csv.DictWriter(fh, fieldnames=[*RECORD_FIELDS, "workload"], extrasaction="ignore")
        writer.writeheader()
        for res in results:
            for rec in res.records:
                row = {k: (f"{v:.7g}" if isinstance(v, float) else v) for k, v in rec.items()}
                writer.writerow({**row, "workload": res.workload})


def summary_rows(results: Sequence[EvalResult]) -> list[dict[str, Any]]:
    """One flat row per result: mean / low / high of every metric, for CSV and JSON."""
    rows = []
    for res in results:
        row: dict[str, Any] = {"workload": res.workload, "policy": res.policy, "split": res.split,
                               "seeds": len(res.per_seed)}
        for key, iv in res.summary.items():
            row[key] = _finite(iv.mean)
            row[f"{key}_low"] = _finite(iv.low)
            row[f"{key}_high"] = _finite(iv.high)
        rows.append(row)
    return rows


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def write_summary(results: Sequence[EvalResult], out_dir: Path, meta: dict[str, Any] | None = None) -> None:
    """``summary.json`` (with ``meta``: config, seeds, command) and ``summary.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(results)
    (out_dir / "summary.json").write_text(json.dumps({"meta": meta or {}, "results": rows}, indent=2, default=str))
    write_rows_csv(rows, out_dir / "summary.csv")


def write_rows_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Rows as CSV; the header is the union of the rows' keys in first-seen order."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(results: Sequence[EvalResult]) -> str:
    """Markdown table: one row per result, ``mean ± 95 % half-width`` over seeds."""
    head = ["policy", "split", *[t for _, t, _ in TABLE_COLUMNS], "mix L/S/H"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        cells = [res.policy, res.split]
        for key, _, digits in TABLE_COLUMNS:
            iv = res.summary.get(key)
            cells.append(iv.fmt(digits) if iv is not None else "n/a")
        mix = [res.summary[k].mean if k in res.summary else float("nan") for k in MIX]
        cells.append("/".join(f"{m:.2f}" for m in mix))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def side_by_side(results: Sequence[EvalResult], splits: Sequence[str], keys: Sequence[str]) -> str:
    """Markdown table comparing ``keys`` across ``splits`` per policy (in-domain vs cross-domain)."""
    by = {(r.policy, r.split): r for r in results}
    policies = list(dict.fromkeys(r.policy for r in results))
    head = ["policy", *[f"{k} ({s})" for k in keys for s in splits]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pol in policies:
        cells = [pol]
        for k in keys:
            for s in splits:
                res = by.get((pol, s))
                cells.append(res.summary[k].fmt(3) if res is not None and k in res.summary else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt



def _finish(plt: Any, fig: Any, ax: Any, path: Path) -> None:
    """Grid, legend, save as PNG (creating the folder) and close: the common tail of the scatter plots."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

def plot_pareto(results: Sequence[EvalResult], path: Path, title: str = "") -> None:
    """Cost–quality plane: every policy (oracle starred) with 95 % error bars over seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    for res in results:
        c, q = res.summary["cost_per_1k"], res.summary["quality"]
        marker = "*" if res.policy.endswith("oracle") else "o"
        xerr = None if not math.isfinite(c.half_width) else c.half_width
        yerr = None if not math.isfinite(q.half_width) else q.half_width
        ax.errorbar(c.mean, q.mean, xerr=xerr, yerr=yerr, fmt=marker, ms=12 if marker == "*" else 6, capsize=3,
                    label=f"{res.policy} ({res.split})" if len({r.split for r in results}) > 1 else res.policy)
    ax.set_xlabel("cost per 1000 requests (cost-model units, USD)")
    ax.set_ylabel("quality (share of acceptable answers)")
    ax.set_title(title or "cost–quality")
    _finish(plt, fig, ax, path)


def plot_call_curve(results: Sequence[EvalResult], path: Path, title: str = "") -> None:
    """RouteLLM's view: quality against the share of strong-model calls, pooled over seeds.

    Each policy is a point at its operating point; a router with scores (the threshold router) is also
    drawn as its threshold sweep; dashed lines mark all-small and all-large quality of the same requests.
    """
    from rlroute.eval.metrics import threshold_sweep

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    q_weak = q_strong = float("nan")
    for res in results:
        recs = res.records
        if not recs:
            continue
        ok = np.array([[r["ok_large"], r["ok_small"], r["ok_hybrid"]] for r in recs], dtype=bool)
        action = np.array([int(r["action"]) for r in recs])
        q_weak, q_strong = float(ok[:, 1].mean()), float(ok[:, 0].mean())
        share = float(np.isin(action, (0, 2)).mean())
        quality = float(ok[np.arange(len(recs)), action].mean())
        (line,) = ax.plot([share], [quality], "*" if res.policy.endswith("oracle") else "o", ms=10, label=res.policy)
        scores = np.array([r["score"] for r in recs], dtype=np.float64)
        if np.isfinite(scores).all():
            xs, qs = threshold_sweep(scores, ok[:, 0], ok[:, 1])
            ax.plot(xs, qs, "-", color=line.get_color(), alpha=0.7, label=f"{res.policy} (threshold sweep)")
    if np.isfinite(q_weak):
        ax.axhline(q_weak, color="grey", ls="--", lw=1, label="all small")
        ax.axhline(q_strong, color="red", ls="--", lw=1, label="all large")
    ax.set_xlabel("strong-model calls (share of requests: large + hybrid)")
    ax.set_ylabel("quality (drawn outcome of the chosen action)")
    ax.set_title(title or "quality vs strong-model calls")
    _finish(plt, fig, ax, path)


def plot_latency_cdfs(results: Sequence[EvalResult], path: Path, title: str = "") -> None:
    """Empirical CDFs of TTFT and end-to-end latency per policy (completed requests, all seeds)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for res in results:
        for ax, key in zip(axes, ("ttft", "e2e"), strict=True):
            x = np.sort(np.array([r[key] for r in res.records if not r["failed"]], dtype=np.float64))
            x = x[np.isfinite(x)]
            if x.size:
                ax.plot(x, np.arange(1, x.size + 1) / x.size, label=res.policy)
    for ax, name in zip(axes, ("TTFT (s)", "end-to-end latency (s)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("CDF")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title or "latency CDFs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    results: Sequence[EvalResult],
    out_dir: Path,
    title: str,
    meta: dict[str, Any] | None = None,
    records_name: str = "records.csv",
) -> str:
    """Records CSV, summary JSON/CSV, ``summary.md`` and the plots for one workload; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(results, out_dir / records_name)
    write_summary(results, out_dir, meta)
    splits = list(dict.fromkeys(r.split for r in results))
    md = [f"## {title}", "", markdown_table(results), ""]
    if len(splits) > 1:
        md += ["Side by side:", "", side_by_side(results, splits, ("quality", "apgr", "cost_saving")), ""]
    for split in splits:
        sub = [r for r in results if r.split == split]
        suffix = "" if len(splits) == 1 else f"_{split}"
        plot_pareto(sub, out_dir / f"pareto{suffix}.png", f"{title} — {split}")
        plot_latency_cdfs(sub, out_dir / f"latency_cdf{suffix}.png", f"{title} — {split}")
        plot_call_curve(sub, out_dir / f"calls_quality{suffix}.png", f"{title} — {split}")
    text = "\n".join(md)
    (out_dir / "summary.md").write_text(text + "\n")
    return text
