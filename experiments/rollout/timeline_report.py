"""The rollout timeline's numbers and plot from the router's decision log (``timeline.py``).

Times are seconds since the replay started (the decision log's ``ts`` minus the run's wall clock at start).
Phases: ``shadow`` (before the first canary call), ``canary`` (until the promotion), ``promoted`` (after it).
TTFT is the decision log's ``outcome.ttft_s`` (modelled seconds; speedup 1, so wall seconds too).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.serve.decisionlog import read_log
from rlroute.types import ACTION_NAMES

ARMS = ("incumbent", "good", "bad")
COLOURS = {"incumbent": "#4c72b0", "good": "#55a868", "bad": "#c44e52"}


def transitions(events: list[dict[str, Any]]) -> dict[str, float]:
    """The times of the canary step, the bad canary's rollback and the promotion (absent if they did not happen)."""
    out: dict[str, float] = {}
    for e in events:
        if e["call"].startswith("POST /admin/arms") and (e.get("body") or {}).get("name") == "good" and e["status"] == 200:
            out.setdefault("good_canary", e["t"])
        elif e["call"].startswith("POST /admin/arms") and (e.get("body") or {}).get("name") == "bad" and e["status"] == 200:
            out.setdefault("bad_canary", e["t"])
        elif e["call"] == "rollback":
            out.setdefault(f"{e['arm']}_rolled_back", e["t"])
        elif e["call"] == "POST /admin/arms/good/promote" and e["status"] == 200:
            out["good_promoted"] = e["t"]
    return out


def rows(log: Path, wall0: float) -> list[dict[str, Any]]:
    return [{**r, "t": r["ts"] - wall0} for r in read_log(log) if r["action"] is not None]


def pct(x: list[float], q: float) -> float | None:
    return float(np.percentile(x, q)) if x else None


def arm_stats(rs: list[dict[str, Any]]) -> dict[str, Any]:
    ttft = [r["outcome"]["ttft_s"] for r in rs if r.get("outcome") and r["outcome"].get("ttft_s") is not None]
    mix = Counter(ACTION_NAMES[r["action"]] for r in rs)
    return {"requests": len(rs), "actions": {k: mix.get(k, 0) for k in ACTION_NAMES},
            "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99),
            "fallback_rate": sum(r["source"] == "fallback" for r in rs) / len(rs) if rs else None,
            "errors": sum(bool(r.get("outcome") and r["outcome"].get("error")) for r in rs)}


def summarise(log: Path, events: list[dict[str, Any]], wall0: float, recs: list[Any], args: dict[str, Any]
              ) -> dict[str, Any]:
    rs = rows(log, wall0)
    tr = transitions(events)
    start, promo = tr.get("good_canary", float("inf")), tr.get("good_promoted", float("inf"))
    phases = {"shadow": (0.0, start), "canary": (start, promo), "promoted": (promo, float("inf"))}
    out: dict[str, Any] = {"args": args, "transitions": tr, "requests_sent": len(recs),
                           "answered_ok": sum(r.ok for r in recs), "phases": {}}
    for name, (lo, hi) in phases.items():
        sel = [r for r in rs if lo <= r["t"] < hi]
        ph: dict[str, Any] = {"from_s": lo, "to_s": hi if np.isfinite(hi) else max((r["t"] for r in rs), default=lo),
                              "arms": {a: arm_stats([r for r in sel if r["arm"] == a]) for a in ARMS
                                       if any(r["arm"] == a for r in sel)}}
        shadow = [r for r in sel if "good" in r.get("arms", {}) and r["arm"] == "incumbent"]
        if name == "shadow" and shadow:  # what the shadow would have done on the incumbent's requests
            g = [r["arms"]["good"] for r in shadow]
            ph["shadow_good"] = {"decisions": len(g),
                                 "agreement_with_incumbent": float(np.mean([x["action"] == r["arms"]["incumbent"]["action"]
                                                                            for x, r in zip(g, shadow, strict=True)])),
                                 "actions": dict(Counter(ACTION_NAMES[x["action"]] for x in g)),
                                 "fallback_rate": float(np.mean([x["source"] == "fallback" for x in g]))}
        out["phases"][name] = ph
    out["rollbacks"] = [e for e in events if e["call"] == "rollback"]
    return out


def plot(log: Path, events: list[dict[str, Any]], wall0: float, path: Path, bin_s: float = 10.0) -> None:
    """Request rate, per-arm share of the executed requests and per-arm p99 TTFT per ``bin_s``, transitions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = rows(log, wall0)
    end = max(r["t"] for r in rs)
    edges = np.arange(0.0, end + bin_s, bin_s)
    mids = edges[:-1] + bin_s / 2
    t = np.array([r["t"] for r in rs])
    arm = np.array([r["arm"] for r in rs])
    ttft = np.array([r["outcome"]["ttft_s"] if r.get("outcome") and r["outcome"].get("ttft_s") is not None
                     else np.nan for r in rs])
    fig, ax = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    counts = np.histogram(t, edges)[0]
    ax[0].plot(mids, counts / bin_s, color="#333")
    ax[0].set_ylabel("requests / s")
    shares = [np.histogram(t[arm == a], edges)[0] / np.maximum(counts, 1) for a in ARMS]
    ax[1].stackplot(mids, *shares, labels=ARMS, colors=[COLOURS[a] for a in ARMS], alpha=0.8)
    ax[1].set_ylabel("share acted on")
    ax[1].set_ylim(0, 1)
    ax[1].legend(loc="upper right", fontsize=8)
    for a in ARMS:
        p99 = [np.nanpercentile(ttft[(arm == a) & (t >= lo) & (t < lo + 2 * bin_s)], 99)
               if np.isfinite(ttft[(arm == a) & (t >= lo) & (t < lo + 2 * bin_s)]).sum() >= 3 else np.nan
               for lo in edges[:-1] - bin_s / 2]
        ax[2].plot(mids, p99, marker=".", color=COLOURS[a], label=a)
    ax[2].set_ylabel(f"p99 TTFT, s ({2 * bin_s:g} s windows)")
    ax[2].set_xlabel("seconds since the replay started")
    ax[2].legend(loc="upper right", fontsize=8)
    labels = {"good_canary": "good: shadow → canary; bad: canary", "bad_rolled_back": "bad rolled back (rule)",
              "good_promoted": "good promoted"}
    for k, x in transitions(events).items():
        if k in labels:
            for a in ax:
                a.axvline(x, color="#888", ls="--", lw=1)
            ax[0].annotate(labels[k], (x, ax[0].get_ylim()[1]), rotation=90, va="top", ha="right", fontsize=7)
    fig.suptitle("rollout through rlroute serve: shadow → canary → promotion, a bad canary rolled back", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
