"""Construct the default policy of ``rlroute bench parity``: an exported PPO actor that uses every action.

``rlroute bench parity`` needs a policy that chooses each action on at least 10 % of its decisions and
whose choice depends on request *and* pool state, so that a feature the router gets wrong changes
actions. A short PPO run on the default scenario collapses onto one or two actions, so this script
*constructs* one (documented here, not presented as a learned router): observations are recorded on the
bench's own setting (simulator, 1 large + 2 small, synthetic workload's ``all`` split at 5 / 10 / 20
req/s, one window each — seeds 100, 101, 102 —, seed heuristic driving), labelled by a hand-set rule, and the actor of a
freshly initialised SB3 PPO (``MlpPolicy``, 2x64) is fitted to the labels by cross-entropy; the result goes
through ``rlroute export`` (ONNX, manifest, ONNX-vs-torch verification) unchanged.

The rule: ``score = complexity + 0.3 * cache.small.best_match_ratio - 0.5 * system.large.load_per_available``
(all normalised features), cut at its 40th and 75th percentiles on the recorded data: small below,
hybrid between, large above.

Its OOD guard (:mod:`rlroute.export.ood`): the training statistics are those of the ``train`` windows
replayed with the fitted policy deciding (what a trained policy's own rollouts would record); the
thresholds are calibrated on the ``val`` split — two windows per rate (seeds 200 and 201: the first fits,
the second measures the false-positive rate) — with the policy deciding, as it will when served.

Command (about a minute on 2 cores)::

    .venv/bin/python experiments/parity/make_policy.py --out experiments/parity/policy
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RATES = (5.0, 10.0, 20.0)


def record(rates: tuple[float, ...], n: int, split: str, seeds: tuple[int, ...], slot: Any = None) -> np.ndarray:
    """Observations of the bench's setting on ``split``, one window per seed and rate, ``slot`` deciding
    (default: no policy, the seed heuristic decides)."""
    from rlroute.bench import parity as P
    from rlroute.policies.registry import make_policy
    from rlroute.serve.decision import PolicySlot

    slot = slot or PolicySlot(None, 0.0, make_policy("heuristic"))  # no policy: the seed heuristic decides (reason policy_missing)
    out = []
    for seed in seeds:
        for rate in rates:
            obs, _, _, _ = P._run_sim(P._client_requests(P._window(n, rate, seed, split), exact=True), slot)
            out.append(obs)
    return np.concatenate(out)


def labels(obs: np.ndarray) -> np.ndarray:
    """The hand-set rule of the module docstring."""
    from rlroute.features import SCHEMA

    col = {n: i for i, n in enumerate(SCHEMA.names)}
    score = (obs[:, col["request.complexity"]] + 0.3 * obs[:, col["cache.small.best_match_ratio"]]
             - 0.5 * obs[:, col["system.large.load_per_available"]])
    lo, hi = np.percentile(score, [40, 75])
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
    ap.add_argument("--per-rate", type=int, default=600, help="requests per recorded window")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from rlroute.env.build import default_config
    from rlroute.export.cli import export_policy
    from rlroute.policies.registry import make_policy
    from rlroute.serve.decision import PolicySlot

    obs = np.concatenate([record((rate,), a.per_rate, "all", (100 + k,)) for k, rate in enumerate(RATES)])
    y = labels(obs)
    model = fit(obs, y, a.seed, a.steps)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        model.save(run / "model.zip")  # type: ignore[attr-defined]
        np.save(Path(tmp) / "obs.npy", obs)
        bare = export_policy(Path(tmp) / "bare", default_config(), run_dir=run, obs_file=str(Path(tmp) / "obs.npy"),
                             seed=a.seed, ood={"enabled": False})
        del bare
        slot = PolicySlot(str(Path(tmp) / "bare"), 0.0, make_policy("heuristic"))
        np.save(Path(tmp) / "train.npy", record(RATES, a.per_rate, "train", (100, 101, 102), slot))
        np.save(Path(tmp) / "val.npy", record(RATES, a.per_rate, "val", (200, 201), slot))
        m = export_policy(a.out, default_config(), run_dir=run, obs_file=str(Path(tmp) / "obs.npy"),
                          overwrite=True, seed=a.seed,
                          ood={"obs_file": str(Path(tmp) / "train.npy"), "calib_file": str(Path(tmp) / "val.npy")})
    c = m["ood"]["calibration"]
    print(f"exported {a.out}: schema {m['feature_schema']['hash'][:12]}, verification {m['verification']}")
    print(f"OOD guard: false positives {c['fpr_holdout']:.4f} on {c['n_holdout']} held-out val observations "
          f"(fit half {c['fpr_fit']:.4f}, by block {c['fpr_holdout_by_block']})")


if __name__ == "__main__":
    main()
