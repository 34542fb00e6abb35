"""Calibrate an exported policy to a traffic it was not trained on: one logit offset and the rule its guard falls
back to, both chosen on that traffic's validation split.

A learned router meets traffic it never saw (leave-one-workload-out in ``experiments/scenarios``: policies
trained without a workload send it 40-55 % to the large pool where the best rule sends 0-17 %), while a
static rule's knob is tuned on the deployment's own validation data (the study's threshold router).
:func:`tune_action_bias` gives the learned policy the same calibration: it adds ``b`` to the *small* action's
logit (``manifest.action_bias``, applied by :class:`~rlroute.policies.onnx.OnnxPolicy` wherever the folder is
loaded: the router, the evaluator, OPE propensities) and names the rule that decides what the folder's
out-of-distribution guard refuses (``manifest.fallback``, one of
:data:`~rlroute.export.manifest.FALLBACK_RULES`; the router's default is the seed heuristic, which on a
traffic unlike its tuning can be the worst rule: LOWO run 5, Mooncake conversation, 0.307 against all-small's
0.445). Every pair (``b``, fallback) of ``grid`` x ``fallbacks`` is evaluated as ``rlroute serve`` decides with
the folder (guard on) on ``seeds`` of ``split``, and the best mean reward is kept (ties: the smallest ``|b|``,
then the earlier fallback). At an offset where the guard refused nothing the fallback decided nothing, so the
other fallbacks are not run again there (the same decisions, the same episode). ``b > 0`` moves decisions to
the small pool, ``b < 0`` away from it; ``b = 0`` is the policy as trained. The sweep is recorded in
``manifest.action_bias_tuning``.

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

from rlroute.export.manifest import FALLBACK_RULES, MANIFEST_FILE, write_manifest

# Offsets of the small action's logit; 0 (the policy as trained) is always among them. Doubling steps both ways
# to +-32: a policy fitted to near-certainty has logit gaps beyond 16 (the parity bench's constructed policy,
# without its guard: an offset of +16 moves its large share on the default workload's val episode 1000, 48
# decisions, from 0.33 to only 0.17).
GRID = (-32.0, -8.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _write_calibration(folder: Path, bias: float, fallback: str, tuning: dict[str, Any] | None) -> None:
    m = json.loads((folder / MANIFEST_FILE).read_text())
    m["action_bias"] = {"small": float(bias)}
    m["fallback"] = fallback
    if tuning is None:
        m.pop("action_bias_tuning", None)
    else:
        m["action_bias_tuning"] = tuning
    write_manifest(folder, m)


def tune_action_bias(
    folder: str | Path, cfg: Any, out: str | Path, split: str = "val", seeds: Sequence[int] = (1000, 1001),
    grid: Sequence[float] = GRID, fallbacks: Sequence[str] = FALLBACK_RULES,
) -> dict[str, Any]:
    """Copy the exported policy ``folder`` to ``out`` with the small action's logit offset and the guard's
    fallback chosen on ``cfg``'s ``split`` (best mean reward over ``seeds``, the served policy deciding);
    returns the tuning record (``chosen``: the offset, ``chosen_fallback``, ``sweep``: one row per pair tried).

    Args:
        folder: an exported policy folder (``rlroute export``); left unchanged.
        cfg: the composed config of the traffic to calibrate to (workload, quality, cluster, reward).
        out: the calibrated folder (replaced if it exists).
        split: the split the offset is chosen on; never the test split.
        seeds: validation episodes.
        grid: offsets to try; 0 is added when missing.
        fallbacks: rules the guard's refusals may go to (``FALLBACK_RULES`` names); the first is the default
            a tie keeps.
    """
    from rlroute.eval.run import default_env_factory, evaluate
    from rlroute.policies.onnx import OnnxPolicy

    if split.startswith("test"):
        raise ValueError(f"tune_action_bias: split={split!r}; the offset is tuned on validation data, never test")
    if not seeds:
        raise ValueError("tune_action_bias: expected at least one validation seed")
    values = sorted({float(b) for b in grid} | {0.0})
    if not all(np.isfinite(values)):
        raise ValueError(f"tune_action_bias: grid must be finite numbers, got {list(grid)}")
    rules = list(dict.fromkeys(str(f) for f in fallbacks))
    unknown = [f for f in rules if f not in FALLBACK_RULES]
    if not rules or unknown:
        raise ValueError(f"tune_action_bias: fallbacks must be among {list(FALLBACK_RULES)}, got {list(fallbacks)}")
    src, dst = Path(folder), Path(out)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    env = default_env_factory(cfg, split)
    sweep: list[dict[str, Any]] = []
    try:
        for b in values:
            for i, f in enumerate(rules):
                if i and sweep[-i]["fallback_rate"] == 0.0:  # nothing refused at this offset: no fallback decided
                    sweep.append({**sweep[-i], "fallback": f, "evaluated": False})
                    continue
                _write_calibration(dst, b, f, None)
                res = evaluate(OnnxPolicy(dst, name="calibrating"), cfg, split, list(seeds), reference_cost={},
                               env=env)
                sweep.append({"bias": b, "fallback": f, "evaluated": True,
                              "reward": float(np.mean([m["reward"] for m in res.per_seed])),
                              "large_share": float(np.mean([m["strong_share"] for m in res.per_seed])),
                              "fallback_rate": float(np.mean([m["fallback_rate"] for m in res.per_seed]))})
    finally:
        env.close()
    best = max(sweep, key=lambda r: (r["reward"], -abs(r["bias"]), -rules.index(r["fallback"])))
    tuning = {"split": split, "seeds": [int(s) for s in seeds], "grid": values, "fallbacks": rules,
              "chosen": best["bias"], "chosen_fallback": best["fallback"], "sweep": sweep,
              "workload": str(cfg.workload.get("name", "")) if "workload" in cfg else ""}
    _write_calibration(dst, best["bias"], best["fallback"], tuning)
    return tuning


def main() -> None:
    """Hydra entry: ``rlroute calibrate folder=... out=... [workload=... ...]`` (config ``conf/calibrate.yaml``)."""
    import hydra
    from omegaconf import DictConfig

    from rlroute.paths import CONF_DIR

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="calibrate")
    def _run(cfg: DictConfig) -> None:
        rec = tune_action_bias(str(cfg.folder), cfg, str(cfg.out), str(cfg.split), [int(s) for s in cfg.seeds],
                               [float(b) for b in cfg.grid], [str(f) for f in cfg.fallbacks])
        for r in rec["sweep"]:
            mark = "  <- chosen" if (r["bias"], r["fallback"]) == (rec["chosen"], rec["chosen_fallback"]) else ""
            print(f"small-action offset {r['bias']:+5.1f}, fallback {r['fallback']:<11}: {rec['split']} reward "
                  f"{r['reward']:.4f}, large share {r['large_share']:.3f}, guard refusals {r['fallback_rate']:.3f}{mark}")
        print(f"wrote {cfg.out} (manifest.action_bias = {{'small': {rec['chosen']}}}, "
              f"manifest.fallback = {rec['chosen_fallback']!r})")

    _run()

