"""Construct the default policy of ``rlroute bench parity``: an exported PPO actor that uses every action.

``rlroute bench parity`` needs a policy that chooses each action on at least 10 % of its decisions and
whose choice depends on request *and* pool state, so that a feature the router gets wrong changes
actions. A short PPO run on the default scenario collapses onto one or two actions, so this script
*constructs* one (documented here, not presented as a learned router): observations are recorded on the
bench's own setting (simulator, 1 large + 2 small, synthetic workload at 5 / 10 / 20 req/s twice, 300
requests each, starting at six evenly spaced times of day, seed heuristic driving), labelled by a
hand-set rule, and the actor of a freshly initialised SB3 PPO
(``MlpPolicy``, 2x64) is fitted to the labels by cross-entropy; the result goes through ``rlroute
export`` (ONNX, manifest, ONNX-vs-torch verification) unchanged. Its out-of-distribution guard (which the
bench leaves off on both sides; ``tests/test_serve_ood.py`` and ``ood.py`` use it) takes its statistics
from ``train`` windows and its thresholds from ``val`` windows at 2 / 4 / 8 / 16 req/s twice, the fitted
policy deciding: a span that contains the bench's replay rate (0.6 x the knee: 2.4 req/s at schema v4,
knee 4) — at 5 / 10 / 20 req/s, the actor's rates, the guard flagged 6.3 % of the replay's decisions
(``README.md``).

The rule: ``score = complexity + 0.3 * cache.small.best_match_ratio - 0.5 * system.large.load_per_available``
(all normalised features), cut at its 40th and 70th percentiles on the recorded data: small below,
hybrid between, large above.

Command (about a minute on 2 cores)::

    .venv/bin/python experiments/parity/make_policy.py --out experiments/parity/policy
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def record(rates: tuple[float, ...], n: int, split: str = "all", seed0: int = 100, slot: Any = None) -> np.ndarray:
    """Observations of the bench's setting on ``split``, window k with seed ``seed0 + k``, ``slot`` deciding
    (default: no policy, the seed heuristic decides); the k-th window starts at the k-th of ``len(rates)``
    evenly spaced times of day (the router's time-of-day features follow the wall clock, so the replay can
    run at any hour)."""
    from rlroute.bench import parity as P
    from rlroute.serve.decision import PolicySlot

    slot = slot or PolicySlot(None, 0.0, {})  # no policy: the seed heuristic decides (reason policy_missing)
    out = []
    for k, rate in enumerate(rates):
        day_offset = k * 86400.0 / len(rates)
        reqs = P._client_requests(P._window(n, rate, seed0 + k, split), exact=True)
        obs, _, _, _ = P._run_sim(reqs, slot, day_offset)
        out.append(obs)
    return np.concatenate(out)


def labels(obs: np.ndarray) -> np.ndarray:
    """The hand-set rule of the module docstring."""
    from rlroute.features import SCHEMA

    col = {n: i for i, n in enumerate(SCHEMA.names)}
    score = (obs[:, col["request.complexity"]] + 0.3 * obs[:, col["cache.small.best_match_ratio"]]
             - 0.5 * obs[:, col["system.large.load_per_available"]])
    lo, hi = np.percentile(score, [40, 70])
    return np.where(score >= hi, 0, np.where(score >= lo, 2, 1))  # 0 large, 1 small, 2 hybrid


def fit(obs: np.ndarray, y: np.ndarray, seed: int, steps: int) -> object:
    """A fresh PPO whose actor is fitted to ``y`` (cross-entropy on the action logits)."""
    import torch

    from rlroute.env.build import default_config
    from rlroute.export.cli import fresh_model

    torch.manual_seed(seed)
    model = fresh_model(default_config(), "PPO", seed)
    pol = model.policy
    opt = torch.optim.Adam(pol.parameters(), lr=3e-3)
    x = torch.as_tensor(obs, dtype=torch.float32)
    t = torch.as_tensor(y, dtype=torch.long)
    for _ in range(steps):
        logits = pol.get_distribution(x).distribution.logits
        loss = torch.nn.functional.cross_entropy(logits, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = float((pol.get_distribution(x).distribution.logits.argmax(1) == t).float().mean())
    print(f"fit: loss {float(loss):.3f}, train accuracy {acc:.3f}, label shares {np.bincount(y, minlength=3) / len(y)}")
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/parity/policy")
    ap.add_argument("--per-rate", type=int, default=300)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from rlroute.env.build import default_config
    from rlroute.export.cli import export_policy
    from rlroute.serve.decision import PolicySlot

    rates = (5.0, 10.0, 20.0) * 2
    guard_rates = (2.0, 4.0, 8.0, 16.0) * 2
    obs = record(rates, a.per_rate)
    y = labels(obs)
    model = fit(obs, y, a.seed, a.steps)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        model.save(run / "model.zip")  # type: ignore[attr-defined]
        np.save(Path(tmp) / "obs.npy", obs)
        export_policy(Path(tmp) / "bare", default_config(), run_dir=run, obs_file=str(Path(tmp) / "obs.npy"),
                      seed=a.seed, ood={"enabled": False})
        # The guard (rlroute bench parity decides without it on both sides; the router's OOD tests and
        # experiments/parity/ood.py use it): training statistics from train windows with the fitted policy
        # deciding, thresholds calibrated on val windows (the first half fits, the second measures).
        slot = PolicySlot(str(Path(tmp) / "bare"), 0.0, {})
        np.save(Path(tmp) / "train.npy", record(guard_rates, a.per_rate, "train", 100, slot))
        np.save(Path(tmp) / "val.npy", record(guard_rates, a.per_rate, "val", 200, slot))
        m = export_policy(a.out, default_config(), run_dir=run, obs_file=str(Path(tmp) / "obs.npy"),
                          overwrite=True, seed=a.seed,
                          ood={"obs_file": str(Path(tmp) / "train.npy"), "calib_file": str(Path(tmp) / "val.npy")})
    c = m["ood"]["calibration"]
    print(f"exported {a.out}: schema {m['feature_schema']['hash'][:12]}, verification {m['verification']}")
    print(f"OOD guard: false positives {c['fpr_holdout']:.4f} on {c['n_holdout']} held-out val observations "
          f"(fit half {c['fpr_fit']:.4f})")


if __name__ == "__main__":
    main()
