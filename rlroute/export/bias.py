"""Calibrate an exported policy's large share to a traffic it was not trained on: one logit offset, tuned on
that traffic's validation split.

A learned router meets traffic it never saw (leave-one-workload-out in ``experiments/scenarios``: policies
trained without a workload send it 40-55 % to the large pool where the best rule sends 0-17 %), while a
static rule's knob is tuned on the deployment's own validation data (the study's threshold router).
:func:`tune_action_bias` gives the learned policy the same one-knob calibration: it adds ``b`` to the
*small* action's logit (``manifest.action_bias``, applied by :class:`~rlroute.policies.onnx.OnnxPolicy`
wherever the folder is loaded: the router, the evaluator, OPE propensities), evaluates the folder as
``rlroute serve`` decides with it (OOD guard on, the seed heuristic deciding what the guard refuses) on
``seeds`` of ``split`` for every ``b`` of ``grid``, and keeps the best mean reward (ties: the smallest
``|b|``). ``b > 0`` moves decisions to the small pool, ``b < 0`` away from it; ``b = 0`` is the policy as
trained. The sweep is recorded in ``manifest.action_bias_tuning``.

What it cannot do: it shifts the policy's share, not its ranking of requests, and it needs rewards on the
new traffic's validation split (quality labels or a quality model, as the threshold rule's tuning does).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.export.manifest import MANIFEST_FILE, write_manifest

# Offsets of the small action's logit; 0 (the policy as trained) is always among them. Doubling steps both ways
# to +-32: a policy fitted to near-certainty has logit gaps beyond 16 (the parity bench's constructed policy,
# without its guard: an offset of +16 moves its large share on the default workload's val episode 1000, 48
# decisions, from 0.33 to only 0.17).
GRID = (-32.0, -8.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _write_bias(folder: Path, bias: float, tuning: dict[str, Any] | None) -> None:
    m = json.loads((folder / MANIFEST_FILE).read_text())
    m["action_bias"] = {"small": float(bias)}
    if tuning is None:
        m.pop("action_bias_tuning", None)
    else:
        m["action_bias_tuning"] = tuning
    write_manifest(folder, m)


def tune_action_bias(
    folder: str | Path, cfg: Any, out: str | Path, split: str = "val", seeds: Sequence[int] = (1000, 1001),
    grid: Sequence[float] = GRID,
) -> dict[str, Any]:
    """Copy the exported policy ``folder`` to ``out`` with the small action's logit offset chosen on ``cfg``'s
    ``split`` (best mean reward over ``seeds``, the served policy deciding); returns the tuning record.

    Args:
        folder: an exported policy folder (``rlroute export``); left unchanged.
        cfg: the composed config of the traffic to calibrate to (workload, quality, cluster, reward).
        out: the calibrated folder (replaced if it exists).
        split: the split the offset is chosen on; never the test split.
        seeds: validation episodes.
        grid: offsets to try; 0 is added when missing.
    """
    from rlroute.eval.run import default_env_factory, evaluate
    from rlroute.policies.onnx import OnnxPolicy
    from rlroute.policies.registry import make_policy

    if split.startswith("test"):
        raise ValueError(f"tune_action_bias: split={split!r}; the offset is tuned on validation data, never test")
    if not seeds:
        raise ValueError("tune_action_bias: expected at least one validation seed")
    values = sorted({float(b) for b in grid} | {0.0})
    if not all(np.isfinite(values)):
        raise ValueError(f"tune_action_bias: grid must be finite numbers, got {list(grid)}")
    src, dst = Path(folder), Path(out)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    env = default_env_factory(cfg, split)
    rewards: dict[float, float] = {}
    shares: dict[float, float] = {}
    try:
        for b in values:
            _write_bias(dst, b, None)
            # as rlroute serve decides with the folder: guard on, the seed heuristic deciding what it refuses
            policy = OnnxPolicy(dst, fallback=make_policy("heuristic"), name="calibrating")
            res = evaluate(policy, cfg, split, list(seeds), reference_cost={}, env=env)
            rewards[b] = float(np.mean([m["reward"] for m in res.per_seed]))
            shares[b] = float(np.mean([m["strong_share"] for m in res.per_seed]))
    finally:
        env.close()
    best = max(values, key=lambda b: (rewards[b], -abs(b)))
    tuning = {"split": split, "seeds": [int(s) for s in seeds], "grid": values, "chosen": best,
              "val_reward_by_bias": {str(b): rewards[b] for b in values},
              "val_large_share_by_bias": {str(b): shares[b] for b in values},
              "workload": str(cfg.workload.get("name", "")) if "workload" in cfg else ""}
    _write_bias(dst, best, tuning)
    return tuning


def main() -> None:
    """Hydra entry: ``rlroute calibrate folder=... out=... [workload=... ...]`` (config ``conf/calibrate.yaml``)."""
    import hydra
    from omegaconf import DictConfig

    from rlroute.paths import CONF_DIR

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="calibrate")
    def _run(cfg: DictConfig) -> None:
        rec = tune_action_bias(str(cfg.folder), cfg, str(cfg.out), str(cfg.split), [int(s) for s in cfg.seeds],
                               [float(b) for b in cfg.grid])
        for b in rec["grid"]:
            mark = "  <- chosen" if b == rec["chosen"] else ""
            print(f"small-action offset {b:+5.1f}: {rec['split']} reward {rec['val_reward_by_bias'][str(b)]:.4f}, "
                  f"large share {rec['val_large_share_by_bias'][str(b)]:.3f}{mark}")
        print(f"wrote {cfg.out} (manifest.action_bias = {{'small': {rec['chosen']}}})")

    _run()

