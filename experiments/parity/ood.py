"""False positives and true positives of the OOD guard through ``rlroute serve`` (issue 12 item 5).

The policy is the parity bench's (``experiments/parity/policy``, :mod:`make_policy`): training statistics
from the ``train`` split of the bench's setting, thresholds calibrated on its ``val`` split. Three figures:

* **validation** — the manifest's held-out half of the ``val`` calibration (``fpr_holdout``), and the
  guard on fresh ``val`` windows in the simulator (seeds 300+, not used by the calibration), the policy
  deciding;
* **parity replay** — windows of the ``all`` split (conversations generated apart from ``train`` and
  ``val``) at ``--load`` of the knee (measured as ``rlroute bench parity`` does, on its window) through
  ``rlroute serve`` over emulated workers, exactly as ``rlroute bench parity``'s tier 2 sends them, each
  window on freshly started workers and router (as the bench and the training episodes start);
  false-positive rate = the share of the router's decisions with reason ``out_of_distribution`` (its
  decision log), checked against its ``rlroute_router_fallbacks_total`` counter. Windows use seeds
  ``--seed0``+: 21+ since the request window (windows 1-3 were used while redesigning the score, 11-15
  while choosing the request window's half-life and margin, and reported before it: ``rlroute/export/ood.py``). Each refusal is explained
  (``why``: blocks, features out of range, largest z-scores), and the same windows are also run through
  the simulator alone (``sim_only``): the flags a live host does not add;
* **shifted trace** — the same kind of windows with every prompt repeated ``--shift`` times (input-length
  statistics ``--shift`` x training's; ``--shift 4,8`` runs both), through the router the same way:
  true-positive rate = share flagged, with the index of the first refusal (the request window needs its
  first decisions to fill);
* **warm server** (``--warm``, reported apart): the replay windows back to back through one router and
  fleet, each window's conversations under session names of their own (:func:`_own_sessions`), as a
  deployment runs — beyond the first window the pools' caches are fuller than in any training
  episode (short windows from a cold start), a real difference between training and serving, not a false
  positive.

Usage (about 3 minutes on 2 cores)::

    .venv/bin/python experiments/parity/ood.py --out experiments/parity/ood_results.json

The last stdout line is the result JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.bench import parity as P

REASON = "out_of_distribution"


def _shifted(reqs: list[Any], factor: int) -> list[Any]:
    out = []
    for r in reqs:
        s = copy.copy(r)
        s.prompt = " ".join([r.prompt] * factor)
        out.append(s)
    return out


def _counter(url: str) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == "rlroute_router_fallbacks_total" and s.labels.get("reason") == REASON:
                total += s.value
    return total


def _why(guard: Any, obs: np.ndarray) -> dict[str, Any]:
    """Why the flagged observations ``obs`` were refused: per block, how many drifted past their threshold
    or had a feature out of range, how often each feature was out of range, and how often each feature was
    among an observation's three largest (capped) squared z-scores."""
    from collections import Counter

    from rlroute.export.ood import ATOM_COUNT, BLOCKS, VAR_FLOOR, Z_CAP
    from rlroute.features import SCHEMA

    drift, out = guard.scores(obs)
    names = Counter(SCHEMA.names[j] for j in np.nonzero(guard.out_of_range(obs))[1])
    z2 = np.minimum((obs - guard.stats.mean) ** 2 / (guard.stats.var + VAR_FLOOR), Z_CAP**2)
    z2[:, list(guard.ignored)] = 0.0
    if guard.stats.at_low is not None:  # on a recurring training minimum: no deviation (as the guard scores)
        z2[(guard.stats.at_low >= ATOM_COUNT) & (obs <= guard.stats.low.astype(np.float32))] = 0.0
    top = Counter(SCHEMA.names[j] for row in np.argsort(-z2, axis=1)[:, :3] for j in row)
    return {"drift_over": {b: int((drift[:, i] > 1).sum()) for i, b in enumerate(BLOCKS)},
            "out_of_range": {b: int(out[:, i].sum()) for i, b in enumerate(BLOCKS)},
            "features_out_of_range": dict(names.most_common()), "top_z_features": dict(top.most_common(8))}


def _replay_rate(server: Any, reqs: list[Any], speedup: float, guard: Any) -> dict[str, Any]:
    """Replay ``reqs`` through ``server``; its OOD refusals (decision log, with why: :func:`_why`, from the
    observations the router logged) and its counter's total."""
    decided, _, _, _ = P._replay(server, reqs, speedup)
    flags = [decided[i]["reason"] == REASON for i in range(len(reqs))]
    first = next((i for i, f in enumerate(flags) if f), None)
    flagged = [i for i, f in enumerate(flags) if f]
    why = _why(guard, np.array([decided[i]["obs"] for i in flagged], dtype=np.float32)) if flagged else {}
    return {"n": len(flags), "flagged": int(sum(flags)), "rate": float(np.mean(flags)), "first_flagged": first,
            "flagged_at": flagged, "why": why,
            "other_fallbacks": int(sum(1 for d in decided.values() if d["source"] == "fallback"
                                       and d["reason"] != REASON)), "counter": _counter(server.router.url)}


def _own_sessions(reqs: list[Any], seed: int) -> list[Any]:
    """The window's conversations under session names of their own: every window numbers its conversations
    from 0, so windows sent back to back to one router would continue each other's sessions (the router
    counts a session's turns: a conversation's first message would arrive as turn 5), which no client does."""
    from rlroute.serve.intake import SessionTable

    for r in reqs:
        if r.session_id is not None:
            r.session_id = SessionTable.key(f"w{seed}-{r.session_id}")
    return reqs


def _fresh(policy: Path, speedup: float, reqs: list[Any], seed: int, guard: Any) -> dict[str, Any]:
    """One window on freshly started workers and router."""
    with tempfile.TemporaryDirectory(prefix="rlroute-ood-") as tmp:
        server = P._Server(policy, speedup, Path(tmp), None, guard=True)
        try:
            return {"seed": seed, **_replay_rate(server, reqs, speedup, guard)}
        finally:
            server.close()


def run(policy: Path, n: int, windows: int, shift_windows: int, shifts: list[int], load: float,
        speedup: float, warm: bool, seed0: int) -> dict[str, Any]:
    from rlroute.export.ood import OodGuard
    from rlroute.policies.registry import make_policy
    from rlroute.serve.decision import PolicySlot

    manifest = json.loads((policy / "manifest.json").read_text())
    if not manifest.get("ood"):
        raise SystemExit(f"{policy}: the manifest has no out-of-distribution guard ('ood'); export a trained run "
                         "that has VecNormalize statistics with ood.enabled=true (the constructed bench policy "
                         "of make_policy.py is exported without one on purpose)")
    guard = OodGuard.from_json(manifest["ood"])
    slot = PolicySlot(str(policy), 0.0, make_policy("heuristic"))
    val = []
    for seed in range(300, 300 + windows):
        obs, _, _, _ = P._run_sim(P._client_requests(P._window(n, 9.6, seed, "val"), exact=True), slot)
        val.append(float(guard.flags(obs).mean()))
    knee, _ = P._knee(lambda rate: P._client_requests(P._window(n, rate, 1), exact=True), slot)  # the bench's
    rate = load * knee
    sim_replay = []  # the replay's windows in the simulator alone: what the guard flags without a live host
    for seed in range(seed0, seed0 + windows):
        obs, _, _, _ = P._run_sim(P._client_requests(P._window(n, rate, seed), exact=True), slot)
        sim_replay.append({"seed": seed, "flagged_at": np.nonzero(guard.flags(obs))[0].tolist()})
    t0 = time.monotonic()
    replay = [_fresh(policy, speedup, P._client_requests(P._window(n, rate, seed), exact=True), seed, guard)
              for seed in range(seed0, seed0 + windows)]
    shifted = {shift: [_fresh(policy, speedup, P._client_requests(_shifted(P._window(n, rate, seed), shift),
                                                                  exact=True), seed, guard)
                       for seed in range(seed0, seed0 + shift_windows)] for shift in shifts}
    warm_rows = []
    if warm:
        with tempfile.TemporaryDirectory(prefix="rlroute-ood-") as tmp:
            server = P._Server(policy, speedup, Path(tmp), None, guard=True)
            try:
                for seed in range(seed0, seed0 + windows):
                    reqs = _own_sessions(P._client_requests(P._window(n, rate, seed), exact=True), seed)
                    warm_rows.append({"seed": seed, **_replay_rate(server, reqs, speedup, guard)})
            finally:
                server.close()
    wall = time.monotonic() - t0
    total = sum(w["n"] for w in replay)
    cal = manifest["ood"]["calibration"]
    return {
        "value": sum(w["flagged"] for w in replay) / total, "unit": "ood_false_positive_rate_parity_replay",
        "policy": str(policy), "target_fpr": cal["target_fpr"],
        "validation": {"fpr_holdout": cal["fpr_holdout"], "n_holdout": cal["n_holdout"],
                       "fpr_holdout_by_block": cal["fpr_holdout_by_block"],
                       "fresh_val_windows_sim": {"seeds": list(range(300, 300 + windows)), "n_each": n,
                                                 "rate_req_s": 9.6, "fpr": val, "fpr_mean": float(np.mean(val))}},
        "parity_replay": {"knee_req_s": knee, "rate_req_s": rate, "speedup": speedup, "windows": replay,
                          "fpr": sum(w["flagged"] for w in replay) / total, "n": total,
                          "sim_only": {"windows": sim_replay,
                                       "fpr": sum(len(w["flagged_at"]) for w in sim_replay) / (n * windows)}},
        "shifted": {str(shift): {"prompt_repeat": shift, "windows": ws,
                                 "tpr": sum(w["flagged"] for w in ws) / max(1, sum(w["n"] for w in ws))}
                    for shift, ws in shifted.items()},
        "warm_server": {"windows": warm_rows},
        "metrics_counter_matches_log": all(w["counter"] == w["flagged"] for w in
                                           replay + [w for ws in shifted.values() for w in ws]), "wall_s": wall,
        "seed0": seed0,
        "guard": {**{k: manifest["ood"][k] for k in ("thresholds", "range_margin", "range_factor")},
                  "window": manifest["ood"].get("window"),
                  "saturation_limited": int(sum(guard.below_cap[i] for i, _ in guard.saturation))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default=str(P.DEFAULT_POLICY))
    ap.add_argument("--n", type=int, default=300, help="requests per window")
    ap.add_argument("--windows", type=int, default=5, help="parity-replay windows (and fresh val windows)")
    ap.add_argument("--shift-windows", type=int, default=2)
    ap.add_argument("--shift", default="8", help="each prompt of the shifted trace repeated this often "
                    "(comma-separated: one shifted trace each)")
    ap.add_argument("--seed0", type=int, default=21, help="first window seed of the replay and shifted traces")
    ap.add_argument("--load", type=float, default=0.6)
    ap.add_argument("--speedup", type=float, default=10.0)
    ap.add_argument("--warm", action="store_true", help="also replay the windows back to back through one router")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    res = run(Path(a.policy), a.n, a.windows, a.shift_windows, [int(x) for x in a.shift.split(",")], a.load,
              a.speedup, a.warm, a.seed0)
    res["command"] = " ".join([".venv/bin/python experiments/parity/ood.py", *sys.argv[1:]])
    res["cpu_count"] = os.cpu_count()
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
