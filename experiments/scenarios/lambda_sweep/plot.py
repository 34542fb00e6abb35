"""The token_api λ sweep as a Pareto plot and a table (issue 11): quality vs cost saving per λ and policy.

Reads ``cw<λ>/results.json`` of this folder (``rlroute study`` runs, commands in
``experiments/scenarios/README.md``) and run 2's λ = 150 entry of ``../results.json``; writes
``pareto.png`` and ``table.md`` here. Each point is a policy's mean over test windows (and training seeds)
with its 95 % bootstrap interval; the dashed lines are RouteLLM's yardstick (95 % of all-large quality)
and the issue's 50 % cost saving.

    python experiments/scenarios/lambda_sweep/plot.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
POLICIES = ("ppo", "supervised", "threshold", "heuristic", "all_small", "all_large")
LEARNED = ("ppo", "supervised")
MARKERS = {"ppo": "o", "supervised": "s", "threshold": "^", "heuristic": "v", "all_small": "<", "all_large": ">"}


def entries() -> dict[float, dict]:
    """λ -> the token_api scenario entry (with its results file's commit)."""
    out = {}
    for path in sorted(HERE.glob("cw*/results.json")):
        res = json.loads(path.read_text())
        out[float(path.parent.name[2:])] = {**res["scenarios"]["token_api"], "commit": res["commit"]}
    run2 = json.loads((HERE.parent / "results.json").read_text())
    if "token_api" in run2["scenarios"]:
        out.setdefault(150.0, {**run2["scenarios"]["token_api"], "commit": run2["commit"]})
    return dict(sorted(out.items()))


def main() -> None:
    data = entries()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cmap = plt.get_cmap("viridis")
    drawn: set[str] = set()
    rows = ["| λ | policy | reward | quality | quality / all-large | cost saving | large share | seeds × windows | commit |",
            "|---|---|---|---|---|---|---|---|---|"]
    for k, (lam, e) in enumerate(data.items()):
        colour = cmap(k / max(len(data) - 1, 1))
        q_large = e["policies"]["all_large"]["metrics"]["quality"]["mean"]
        for name in POLICIES:
            p = e["policies"].get(name)
            if p is None:
                continue
            m = p["metrics"]
            q, c = m["quality"], m["cost_saving"]
            learned = name in LEARNED  # the rules' quality and cost do not depend on λ: drawn in black
            label = f"{name}, λ={lam:g}" if learned else (name if name not in drawn else None)
            drawn.add(name)
            ax.errorbar(c["mean"], q["mean"], xerr=[[c["mean"] - c["lo"]], [c["hi"] - c["mean"]]],
                        yerr=[[q["mean"] - q["lo"]], [q["hi"] - q["mean"]]], marker=MARKERS[name],
                        color=colour if learned else "black", ms=7 if name == "ppo" else 5, capsize=2,
                        linestyle="none", label=label)
            runs = len(p.get("per_run") or [None])
            rows.append(f"| {lam:g} | {name} | {p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}] | {q['mean']:.3f} | "
                        f"{q['mean'] / q_large:.3f} | {c['mean']:.3f} | {m['mix_large']['mean']:.3f} | "
                        f"{runs} × {len(p['per_seed'])} | {e['commit'][:7]} |")
        ax.axhline(0.95 * q_large, color=colour, linestyle=":", linewidth=0.8)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("cost saving vs all-large")
    ax.set_ylabel("quality (success rate)")
    ax.set_title("token_api: quality vs cost over the cost weight λ\n(dotted: 95 % of all-large quality; dashed: 50 % saving)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(HERE / "pareto.png", dpi=120)
    (HERE / "table.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
