"""Autoscaling study (README.md here): SLO attainment vs GPU-hours for static sizing, reactive, predictive
(with and without cache warm-up) and predictive + learned routing, over seeds; forecast accuracy at the
scaler's horizon vs seasonal-naive and the Poisson floor; the operator plot.

    nice -n 10 .venv/bin/python experiments/autoscaling/study.py --seeds 0 1 2 3 4
    nice -n 10 .venv/bin/python experiments/autoscaling/study.py --configs predictive_ppo --ppo experiments/autoscaling/ppo_run
    nice -n 10 .venv/bin/python experiments/autoscaling/study.py --report      # table + plot from results/*.json

Each run: ``scenario=autoscaling_diurnal`` with the config's scaler, the workload's ``test`` split, arrivals for
``--horizon`` seconds (three 1200 s days by default), drained; the routing policy is the seed heuristic except
for ``predictive_ppo`` (the SB3 run given by ``--ppo``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIGS: dict[str, list[str]] = {
    "static": ["scaler=static"],
    "reactive": ["scaler=reactive"],
    "predictive": ["scaler=predictive"],
    "predictive_warm": ["scaler=predictive", "scaler.cache_warmup.enabled=true"],
    "predictive_ppo": ["scaler=predictive"],
}


def run_one(name: str, seed: int, horizon: float, split: str, ppo: str | None) -> dict[str, Any]:
    from hydra.utils import instantiate

    from rlroute.cluster.base import Hybrid
    from rlroute.cluster.sim import build_cluster
    from rlroute.cluster.sim.run import run
    from rlroute.env.build import default_config
    from rlroute.eval.simulate import deciding
    from rlroute.policies.registry import make_policy
    from rlroute.scaling.sim import attach

    overrides = ["scenario=autoscaling_diurnal", f"seed={seed}", *CONFIGS[name]]
    if name == "predictive_ppo":
        if ppo is None:
            raise SystemExit("predictive_ppo needs --ppo <rlroute train run folder>")
        overrides += ["policy=sb3", f"policy.path={ppo}"]
    cfg = default_config(overrides)
    rng = np.random.default_rng(seed)
    workload = instantiate(cfg.workload, split=split)
    quality = instantiate(cfg.quality)
    cluster = build_cluster(cfg.cluster, np.random.default_rng(seed + 1))
    cluster.hybrid = Hybrid.of(quality.hybrid, cluster.hybrid)
    auto = attach(cluster, cfg.scaler)
    assert auto is not None
    policy = instantiate(cfg.policy) if name == "predictive_ppo" else make_policy("heuristic")
    policy.prepare(cfg)
    policy.reset(rng)
    reqs = itertools.takewhile(lambda r: r.arrival < horizon, workload.requests(rng))
    comps = run(cluster, reqs, deciding(policy, cluster), quality, rng, drain=True)
    slo_t, slo_p = float(cfg.reward.slo_ttft_s), float(cfg.reward.slo_tpot_s)
    met = np.array([not c.failed and c.ttft <= slo_t and c.tpot <= slo_p for c in comps])
    ttft = np.array([c.ttft for c in comps if not c.failed])
    out: dict[str, Any] = {
        "config": name, "seed": seed, "split": split, "horizon_s": horizon, "overrides": overrides,
        "requests": len(comps), "failed": int(sum(c.failed for c in comps)),
        "slo_attainment": float(met.mean()), "ttft_p99": float(np.percentile(ttft, 99)),
        "quality_ok": float(np.mean([bool(c.quality_ok) for c in comps])),
        "large_share": float(np.mean([int(c.action) != 1 for c in comps])),
        **auto.summary(),
    }
    # per-tick p99 TTFT of the requests that arrived in the tick (operator plot)
    bucket = auto.interval
    nb = int(math.ceil(horizon / bucket))
    by = [[] for _ in range(nb)]
    for c in comps:
        k = int(c.arrival // bucket)
        if 0 <= k < nb:
            by[k].append(c.ttft if not c.failed else float("inf"))
    out["ttft_p99_by_tick"] = [float(np.percentile(b, 99)) if b else None for b in by]
    out["timeline"] = auto.timeline
    if name.startswith("predictive"):
        sc = auto.scaler
        out["forecast"] = forecast_accuracy(auto.timeline, sc.interval_s, round(sc.last_horizon_s / sc.interval_s),
                                            sc.forecaster.season)
    return out


def forecast_accuracy(timeline: list[dict[str, Any]], interval: float, h: int, m: int) -> dict[str, Any]:
    """The forecast made at each tick for the bucket ``h`` ticks ahead vs what arrived then; against the
    seasonal-naive forecast at the same horizon and the Poisson floor. ``seasonal_model``: forecasts made with
    two seasons of history (Holt-Winters proper); ``after_first_season``: every forecast made after one season
    (the second day's come from the Holt trend fallback)."""
    from rlroute.scaling.forecast import SeasonalNaive, accuracy, poisson_floor

    rows: dict[float, dict[str, Any]] = {}
    for r in timeline:
        rows.setdefault(r["time"], r)
    times = sorted(rows)
    actual = np.array([rows[t]["arrival_rate"] for t in times])
    fc = [rows[t]["forecast_rate"] for t in times]
    naive = SeasonalNaive(interval, m * interval)
    pairs = []  # (origin tick, forecast, seasonal naive, actual h ticks later)
    for k in range(len(times)):
        naive.observe(actual[k] * interval)
        if k + h < len(times) and fc[k] is not None and k + 1 >= m:
            pairs.append((k, fc[k], float(naive.predict(h)[h - 1]), actual[k + h]))
    out: dict[str, Any] = {"horizon_s": h * interval, "bucket_s": interval, "season_buckets": m}
    for label, lo in (("seasonal_model", 2 * m), ("after_first_season", m)):
        sel = [p for p in pairs if p[0] + 1 >= lo]
        if not sel:
            continue
        _, f, n, a = (np.array(x) for x in zip(*sel, strict=True))
        out[label] = {"holt_winters": accuracy(f, a), "seasonal_naive": accuracy(n, a),
                      "poisson_floor": poisson_floor(a, interval)}
    return out


def report() -> None:
    from rlroute.eval.stats import t_interval

    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    print(f"{'config':16s} {'n':>2s} {'SLO attainment':>18s} {'GPU-hours':>16s} {'TTFT p99 s':>16s} "
          f"{'large share':>14s} {'quality ok':>14s}")
    for name in CONFIGS:
        rs = [r for r in runs if r["config"] == name]
        if not rs:
            continue
        cols = [t_interval([r[k] for r in rs]) for k in ("slo_attainment", "gpu_hours_total", "ttft_p99",
                                                           "large_share", "quality_ok")]
        print(f"{name:16s} {len(rs):2d} " + " ".join(f"{c.fmt(3):>16s}" for c in cols))
    print("\nforecast accuracy at the scaler's horizon (means over seeds):")
    for r in runs:  # recomputed from the timelines (the selection of forecasts is decided here)
        if "forecast" in r:
            f = r["forecast"]
            r["forecast"] = forecast_accuracy(r["timeline"], f["bucket_s"], round(f["horizon_s"] / f["bucket_s"]),
                                              f["season_buckets"])
    for name in ("predictive",):
        rs = [r for r in runs if r["config"] == name and "forecast" in r]
        for label in ("seasonal_model", "after_first_season"):
            got = [r["forecast"][label] for r in rs if label in r["forecast"]]
            if not got:
                continue
            print(f"  {name} {label} (horizon {rs[0]['forecast']['horizon_s']:.0f} s, {len(got)} seeds)")
            for model in ("holt_winters", "seasonal_naive", "poisson_floor"):
                mape = t_interval([g[model]["mape"] for g in got])
                w10 = t_interval([g[model]["within_10pct"] for g in got])
                print(f"    {model:15s} MAPE {mape.fmt(3)}   within 10 % {w10.fmt(3)}")
    plot(runs)


def plot(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed0 = {r["config"]: r for r in runs if r["seed"] == 0}
    if "predictive" not in seed0:
        return
    fig, ax = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    p = seed0["predictive"]
    rows = {}
    for r in p["timeline"]:
        rows.setdefault(r["time"], r)
    t = np.array(sorted(rows))
    h = p["forecast"]["horizon_s"]
    ax[0].plot(t / 60, [rows[x]["arrival_rate"] for x in t], label="arrivals (req/s, per 30 s tick)")
    fc = [rows[x]["forecast_rate"] for x in t]
    ax[0].plot((t + h) / 60, fc, label=f"forecast made {h:.0f} s earlier", alpha=0.8)
    ax[0].set_ylabel("req/s")
    ax[0].legend(loc="upper right")
    for k, pool in enumerate(("large", "small")):
        for name, style in (("static", ":"), ("reactive", "--"), ("predictive", "-")):
            if name not in seed0:
                continue
            tl = [r for r in seed0[name]["timeline"] if r["pool"] == pool]
            ax[1 + k].step([r["time"] / 60 for r in tl], [r["ready"] for r in tl], style, where="post",
                           label=f"{name}: ready")
            if name == "predictive":
                ax[1 + k].step([r["time"] / 60 for r in tl], [r["ready"] + r["starting"] for r in tl], "-",
                               where="post", alpha=0.4, label="predictive: provisioned")
        ax[1 + k].set_ylabel(f"{pool} instances")
        ax[1 + k].legend(loc="upper right", fontsize=8)
    for name, style in (("static", ":"), ("reactive", "--"), ("predictive", "-")):
        if name in seed0:
            y = [v if v is not None and np.isfinite(v) else np.nan for v in seed0[name]["ttft_p99_by_tick"]]
            ax[3].plot(np.arange(len(y)) * p["interval_s"] / 60, y, style, label=name)
    ax[3].set_yscale("log")
    ax[3].axhline(2.0, color="grey", lw=0.8)
    ax[3].set_ylabel("p99 TTFT (s) by arrival tick")
    ax[3].set_xlabel("minutes (3 compressed days of 20 min)")
    ax[3].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "operator.png", dpi=90)
    print(f"plot: {HERE / 'operator.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["static", "reactive", "predictive", "predictive_warm"],
                    choices=sorted(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--horizon", type=float, default=3600.0, help="seconds of arrivals per run")
    ap.add_argument("--split", default="test")
    ap.add_argument("--ppo", default=None, help="rlroute train run folder for predictive_ppo")
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    if a.report:
        report()
        return
    RESULTS.mkdir(exist_ok=True)
    for seed in a.seeds:
        for name in a.configs:
            out = run_one(name, seed, a.horizon, a.split, a.ppo)
            (RESULTS / f"{name}_seed{seed}.json").write_text(json.dumps(out, default=float) + "\n")
            print(f"{name} seed {seed}: SLO {out['slo_attainment']:.4f} GPU-h {out['gpu_hours_total']:.2f} "
                  f"TTFT p99 {out['ttft_p99']:.3f} s, {out['requests']} requests", flush=True)


if __name__ == "__main__":
    main()
