"""``rlroute ope``: off-policy evaluation of an exported policy from a router's decision log (issue 17 item 3).

Given a decision log (``docs/decision_log.md``; records with the observation the router decided on, the
executed action and the probability it was drawn with) and a candidate exported folder, estimates the
candidate's mean per-request reward had it routed the logged traffic, against the logged (incumbent's)
realised mean:

- **IPS**: ``mean(w_i r_i)``, ``w_i = pi(a_i | x_i) / p_i``; the candidate is deterministic (argmax), so
  ``pi(a_i | x_i) = [candidate's action on x_i == a_i]``.
- **SNIPS**: ``sum(w_i r_i) / sum(w_i)``.
- **DR**: ``mean(q(x_i, pi(x_i)) + w_i (r_i - q(x_i, a_i)))`` with a reward model ``q`` fitted on the log
  (:mod:`rlroute.eval.ope_model`: ridge per action on a few informative features, two-fold cross-fitted so
  no record's own reward fits the model that corrects it). With the logged propensities DR is unbiased
  whatever ``q`` is; a better ``q`` only narrows it.

Each with a 95 % percentile-bootstrap interval over records, and the difference ``estimate - logged mean``
(what the candidate is judged by) with its paired interval; DR's bootstrap refits the reward model on every
resample. The reward of a record is what the log
observed (**quality is not observed in serving**: it counts only through ``quality_label`` where an
external grade was joined): ``quality_weight * label - cost_weight * cost - latency_weight * e2e_s -
slo_penalty * [SLO missed]``. With propensity-1 logs (no exploration floor) IPS/SNIPS see only the records
where the candidate agrees with the logged action; the report states the agreement and the effective sample
size. Not modelled: the candidate's OOD guard and fallback (it is evaluated on its own argmax everywhere),
and, for IPS/SNIPS/DR, the interference between requests (a different action changes the load that later
requests see — they assume it away; ``rlroute bench ope`` measures that bias). **dr_twin** (with
``--twin-pool``, :mod:`rlroute.eval.ope_twin`) is DR with a simulator twin of the deployment as its reward model:
the logged requests replayed with the candidate deciding, so each meets the load the candidate would have made;
its latencies are fitted on the log, the pools given from the deployment's config.

Usage::

    rlroute ope --log logs/decisions.jsonl --policy exports/candidate [--out ope-report] [--cost-weight 1]
                [--latency-weight 0] [--slo-penalty 0] [--quality-weight 1] [--bootstrap 1000] [--seed 0]
                [--twin-pool large=PROFILE:N small=PROFILE:N [--twin-reps 16] [--twin-loop both] [--twin-oracle]]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.bench import emit
from rlroute.eval.ope_model import Z, assign_folds, q_values, reward_features
from rlroute.eval.ope_twin import TwinRuns, TwinSpec, dr_twin, twin_runs
from rlroute.serve.decisionlog import read_log


@dataclass(slots=True)
class RewardSpec:
    """Weights of the observed per-request reward (module doc)."""

    cost_weight: float = 1.0
    latency_weight: float = 0.0
    slo_penalty: float = 0.0
    quality_weight: float = 1.0


@dataclass(slots=True)
class Logged:
    """The usable records of a log as arrays."""

    obs: np.ndarray  # float32[n, d]
    action: np.ndarray  # int[n]
    propensity: np.ndarray  # float[n]
    reward: np.ndarray  # float[n]
    skipped: int
    ids: list[str]  # request_id per record


def observed_reward(rec: dict[str, Any], spec: RewardSpec) -> float:
    """A logged record's reward as far as the log observes it (module doc; an answered ``outcome`` assumed)."""
    o, q = rec["outcome"], rec.get("quality_label")
    return (spec.quality_weight * float(q) if q is not None else 0.0) - spec.cost_weight * float(o["cost"]) \
        - spec.latency_weight * float(o["e2e_s"]) - spec.slo_penalty * (not o["slo_ok"])


def load(path: str | Path, spec: RewardSpec) -> Logged:
    """Records with an observation, an action, a propensity > 0 and an answered outcome."""
    xs, acts, props, rs, ids = [], [], [], [], []
    skipped = 0
    for rec in read_log(path):
        o = rec.get("outcome") or {}
        if rec.get("action") is None or rec.get("obs") is None or not rec.get("propensity") or o.get("e2e_s") is None:
            skipped += 1
            continue
        xs.append(rec["obs"])
        acts.append(int(rec["action"]))
        props.append(float(rec["propensity"]))
        rs.append(observed_reward(rec, spec))
        ids.append(str(rec["request_id"]))
    if not xs:
        raise ValueError(f"{path}: no record with an observation, an action and an answer (decision_file."
                         f"observations must be on; {skipped} records skipped)")
    return Logged(np.asarray(xs, np.float32), np.asarray(acts), np.asarray(props), np.asarray(rs), skipped, ids)


def target_actions(policy: str | Path, obs: np.ndarray) -> np.ndarray:
    """The exported policy's argmax action on each observation (its schema checked; the OOD guard off)."""
    from rlroute.policies.onnx import OnnxPolicy

    p = OnnxPolicy(str(policy), ood=False)
    return np.asarray([int(np.argmax(p.logits(x))) for x in obs])


def estimate(r: np.ndarray, a: np.ndarray, p: np.ndarray, target: np.ndarray, x: np.ndarray,
             n_boot: int = 1000, rng: np.random.Generator | None = None) -> dict[str, dict[str, float]]:
    """IPS, SNIPS and DR of the deterministic ``target`` and the logged mean, each with a 95 % percentile
    bootstrap interval (``lo``, ``hi``), and each estimate's difference to the logged mean (``diff``) with its
    own paired interval (``diff_lo``, ``diff_hi``: estimate minus logged mean on the same resample) — the
    quantity a candidate is judged by. DR's reward model is fitted on ``x`` (features of the records,
    :func:`~rlroute.eval.ope_model.reward_features`), cross-fitted, and refitted on every resample (a record
    drawn twice keeps its fold), so DR's interval includes the model's fitting."""
    rng = rng if rng is not None else np.random.default_rng(0)
    n = len(r)
    folds = assign_folds(n, rng)
    w = (target == a).astype(float) / p

    def point(i: np.ndarray) -> dict[str, float]:
        q = q_values(x[i], a[i], r[i], folds[i])
        m = np.arange(len(i))
        s = w[i].sum()
        return {"ips": float((w[i] * r[i]).mean()), "snips": float((w[i] * r[i]).sum() / s) if s > 0 else float("nan"),
                "dr": float((q[m, target[i]] + w[i] * (r[i] - q[m, a[i]])).mean()), "logged": float(r[i].mean())}

    full = point(np.arange(n))
    boots = [point(rng.integers(0, n, size=n)) for _ in range(n_boot)]
    logged = np.array([b["logged"] for b in boots])
    return {name: interval(v, full["logged"], np.array([b[name] for b in boots]), logged) for name, v in full.items()}


def interval(value: float, logged: float, boot: np.ndarray, boot_logged: np.ndarray) -> dict[str, float]:
    """An estimate with its 95 % percentile-bootstrap interval and its difference to the logged mean with the
    paired interval (each resample's estimate minus its logged mean); resamples where it is undefined dropped."""
    ok = np.isfinite(boot)
    nan = (float("nan"), float("nan"))
    lo, hi = np.percentile(boot[ok], [2.5, 97.5]) if ok.any() else nan
    dlo, dhi = np.percentile((boot - boot_logged)[ok], [2.5, 97.5]) if ok.any() else nan
    return {"value": value, "lo": float(lo), "hi": float(hi), "diff": value - logged, "diff_lo": float(dlo),
            "diff_hi": float(dhi)}


def evaluate(log: str | Path, policy: str | Path, spec: RewardSpec, n_boot: int = 1000, seed: int = 0,
             twin: TwinSpec | None = None, runs: dict[str, TwinRuns] | None = None) -> dict[str, Any]:
    """The candidate's estimates and the logged value from ``log`` (module doc); with ``twin`` also ``dr_twin``
    (``dr_twin_oracle`` for an oracle twin; :mod:`rlroute.eval.ope_twin`), or one twin-corrected estimate per
    precomputed ``runs`` (estimate name -> the twin's runs on this log)."""
    rng = np.random.default_rng(seed)
    lg = load(log, spec)
    target = target_actions(policy, lg.obs)
    est = estimate(lg.reward, lg.action, lg.propensity, target, reward_features(lg.obs), n_boot, rng)
    w = (target == lg.action) / lg.propensity
    if twin is not None and runs is None:
        name = "dr_twin_oracle" if twin.oracle else "dr_twin"
        runs = {name: twin_runs(log, policy, dict(zip(lg.ids, lg.obs, strict=True)), twin, seed)}
    extra: dict[str, Any] = {}
    for name, tw in (runs or {}).items():
        col = {i: j for j, i in enumerate(tw.ids)}
        missing = [i for i in lg.ids if i not in col]
        if missing:
            raise ValueError(f"{log}: records {missing[:3]} are not in the twin's replay (routed records only)")
        j = np.array([col[i] for i in lg.ids])
        rt_pi, rt_mu = tw.rewards(spec.cost_weight, spec.latency_weight, spec.slo_penalty)
        est[name] = interval(*dr_twin(lg.reward, w, rt_pi[:, j], rt_mu[:, j], n_boot, rng, tw.n_point))
        extra[name] = {"reps": rt_pi.shape[0] - tw.n_point, "fit": tw.fits[0] if tw.fits else None,
                       "candidate_large_share": tw.candidate_large_share}
    return {"estimates": est, "twin": extra, "records": int(len(lg.reward)), "skipped": lg.skipped,
            "agreement": float((target == lg.action).mean()),
            "effective_sample_size": float(w.sum() ** 2 / (w**2).sum()) if (w > 0).any() else 0.0,
            "min_propensity": float(lg.propensity.min()),
            "target_action_shares": np.bincount(target, minlength=Z).tolist(),
            "logged_action_shares": np.bincount(lg.action, minlength=Z).tolist(),
            "reward": asdict(spec), "log": str(log), "policy": str(policy), "bootstrap": n_boot, "seed": seed}


def report(result: dict[str, Any], out: Path) -> None:
    """``report.md`` and ``ope.png`` (estimates with intervals beside the logged value) in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    est = result["estimates"]
    names = ["logged", "ips", "snips", "dr", *(k for k in est if k.startswith("dr_twin"))]
    fig, ax = plt.subplots(figsize=(1.5 * len(names), 3.2))
    vals = [est[k]["value"] for k in names]
    err = [[v - est[k]["lo"] for k, v in zip(names, vals, strict=True)],
           [est[k]["hi"] - v for k, v in zip(names, vals, strict=True)]]
    ax.bar(range(len(names)), vals, yerr=err, capsize=4,
           color=["#888", "#4c72b0", "#55a868", "#c44e52", "#8172b2", "#937860"][:len(names)])
    ax.set_xticks(range(len(names)), ["logged (incumbent)", *(f"candidate {k}" for k in names[1:])], fontsize=8)
    ax.set_ylabel("mean reward per request")
    ax.set_title("off-policy estimate, 95 % bootstrap intervals", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "ope.png", dpi=120)
    plt.close(fig)
    rows = "\n".join(f"| {k} | {est[k]['value']:.6g} | [{est[k]['lo']:.6g}, {est[k]['hi']:.6g}] | {est[k]['diff']:.6g} | "
                     f"[{est[k]['diff_lo']:.6g}, {est[k]['diff_hi']:.6g}] |" for k in names)
    (out / "report.md").write_text(
        f"# Off-policy evaluation\n\nLog `{result['log']}` ({result['records']} records used, {result['skipped']} "
        f"skipped); candidate `{result['policy']}`.\n\n| estimate | value | 95 % interval | minus logged | 95 % interval "
        f"|\n| --- | --- | --- | --- | --- |\n"
        f"{rows}\n\nAgreement with the logged actions {result['agreement']:.3f}; effective sample size "
        f"{result['effective_sample_size']:.1f}; smallest propensity {result['min_propensity']:.3g}. Action shares "
        f"(large, small, hybrid): logged {result['logged_action_shares']}, candidate "
        f"{result['target_action_shares']}. Reward weights {result['reward']} (quality is not observed in "
        "serving; it counts only through joined `quality_label`s). `logged` is the incumbent's realised mean.\n\n"
        "![estimates](ope.png)\n")
    (out / "ope.json").write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``rlroute ope`` (``argv``: default the command line's)."""
    ap = argparse.ArgumentParser(prog="rlroute ope", description=__doc__.splitlines()[0])
    ap.add_argument("--log", required=True, help="decision log (rlroute serve decision_file.path)")
    ap.add_argument("--policy", required=True, help="candidate exported policy folder")
    ap.add_argument("--out", type=Path, default=Path("ope-report"))
    ap.add_argument("--cost-weight", type=float, default=1.0)
    ap.add_argument("--latency-weight", type=float, default=0.0, help="per second of e2e")
    ap.add_argument("--slo-penalty", type=float, default=0.0)
    ap.add_argument("--quality-weight", type=float, default=1.0, help="per joined quality_label")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--twin-pool", nargs="*", default=[], metavar="POOL=PROFILE:N",
                    help="the deployment's pools for dr_twin (both: large=... small=...); none: no dr_twin")
    ap.add_argument("--twin-reps", type=int, default=16, help="dr_twin's twin replicates for its interval")
    ap.add_argument("--twin-oracle", action="store_true",
                    help="the twin uses the named profiles' latencies instead of fitting them on the log")
    ap.add_argument("--twin-loop", choices=("open", "closed", "both"), default="both",
                    help="how the candidate decides in the twin (rlroute.eval.ope_twin)")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if a.bootstrap < 10:
        ap.error("--bootstrap must be >= 10")
    try:
        twin = TwinSpec.parse(a.twin_pool, a.twin_reps, a.twin_oracle, a.twin_loop) if a.twin_pool else None
    except ValueError as exc:
        ap.error(str(exc))
    spec = RewardSpec(a.cost_weight, a.latency_weight, a.slo_penalty, a.quality_weight)
    result = evaluate(a.log, a.policy, spec, a.bootstrap, a.seed, twin)
    report(result, a.out)
    dr = result["estimates"]["dr"]
    return emit("ope", {"value": dr["value"], "unit": "mean_reward_dr", "lo": dr["lo"], "hi": dr["hi"],
                        "difference": dr["diff"], "difference_lo": dr["diff_lo"], "difference_hi": dr["diff_hi"],
                        "logged": result["estimates"]["logged"]["value"], "agreement": result["agreement"],
                        "records": result["records"], "report": str(a.out / "report.md"),
                        **{k: {"value": v["value"], "difference": v["diff"], "difference_lo": v["diff_lo"],
                               "difference_hi": v["diff_hi"]}
                           for k, v in result["estimates"].items() if k.startswith("dr_twin")}},
                a.out / "summary.json")
