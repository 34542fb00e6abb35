"""Validation reward per trial against training decisions, from ``curves.json`` (Ray Tune's per-trial results of
the sweep in README.md): ``python experiments/scenarios/tuning/optuna_provisioned/plot.py`` -> ``curves.png``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent

trials = json.loads((HERE / "curves.json").read_text())
fig, ax = plt.subplots(figsize=(8, 4.5))
for t in trials:
    p = t["params"]
    x, y = zip(*t["validations"], strict=True)
    default = p["agent.algo.learning_rate"] == 3e-4 and p["agent.algo.batch_size"] == 128 and p["agent.algo.n_epochs"] == 10
    label = (f"lr {p['agent.algo.learning_rate']:.1e}, bs {p['agent.algo.batch_size']}, γ {p['agent.algo.gamma']}"
             + (" (defaults)" if default else ""))
    ax.plot(x, y, "k--" if default else "-", marker="o", ms=3, lw=2 if default else 1, label=label)
ax.set_xlabel("training decisions")
ax.set_ylabel("validation reward per decision (seeds 1000, 1001)")
ax.set_title("provisioned_fleet: Optuna TPE + ASHA, 16 trials (a line ends where ASHA stopped it)")
ax.grid(alpha=0.3)
ax.legend(fontsize=6, ncol=2, loc="lower right")
fig.tight_layout()
fig.savefig(HERE / "curves.png", dpi=110)
