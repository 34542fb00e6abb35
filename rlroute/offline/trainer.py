"""``rlroute train-offline``: a routing policy learned from a decision log, written as an ordinary run folder.

``@hydra.main`` (``conf/train_offline.yaml``) is a thin shell over :func:`train_offline`. Steps:

1. **data**: ``dataset.log`` (a router's decision log) or, when null, a log simulated now into
   ``<run>/dataset.jsonl`` — ``dataset.behaviour`` with an ``dataset.epsilon`` floor over ``dataset.episodes``
   episodes of the scenario's ``train`` split (:mod:`rlroute.offline.dataset`); the scenario's ``reward`` group
   weighs each record's reward;
2. a random ``dataset.val_fraction`` of the records is held out (agreement with the logged actions reported);
3. **statistics**: the observation moments and range of the training records (``RangeVecNormalize``, as PPO
   runs normalise), saved as ``vecnormalize.pkl``;
4. **learner** (``offline=bc|cql``, :mod:`rlroute.offline.learners`) trains the actor of a fresh SB3 PPO on the
   normalised observations; saved as ``model.zip``, with ``config.yaml``, ``metrics.json`` and the training
   observations ``train_obs.npy``;
5. **export** (``export: true``): ``rlroute export``'s :func:`~rlroute.export.cli.export_policy` on the run
   folder into ``<run>/export`` — ONNX verified against torch on the training observations, manifest with the
   schema hash, OOD guard statistics and thresholds from the training observations (``ood.obs_file``).
   The folder is served by ``rlroute serve policy.path=<run>/export`` like any PPO export.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from rlroute.export.graph import ObsNorm
from rlroute.export.manifest import current_schema
from rlroute.offline.dataset import Dataset, from_log, reward_spec, simulate
from rlroute.offline.learners import LearnerConfig, actor_net, fit
from rlroute.paths import CONF_DIR
from rlroute.seeding import seed_everything

DATASET_FILE, OBS_FILE, EXPORT_DIR = "dataset.jsonl", "train_obs.npy", "export"
MIN_GUARD_RECORDS = 200


@dataclass
class OfflineResult:
    """What :func:`train_offline` wrote: the run folder, its metrics and the export folder (or None)."""

    run_dir: Path
    metrics: dict[str, Any]
    export_dir: Path | None


def load_data(cfg: DictConfig, run_dir: Path) -> tuple[Dataset, dict[str, Any]]:
    """The dataset of ``cfg.dataset`` (step 1)."""
    d = cfg.dataset
    schema = current_schema(str(cfg.features.text))
    spec = reward_spec(cfg.reward)
    if d.get("log"):
        return from_log(str(d.log), spec, schema.dim, schema.hash), {"log": str(d.log)}
    path = run_dir / DATASET_FILE
    summary = simulate(cfg, path, int(d.episodes), float(d.epsilon), int(d.seed), str(d.behaviour), str(d.split))
    return from_log(path, spec, schema.dim, schema.hash), summary


def greedy(model: Any, norm: ObsNorm, obs: np.ndarray) -> np.ndarray:
    """The trained actor's argmax on raw observations (normalised as the exported graph does)."""
    import torch

    with torch.no_grad():
        return actor_net(model.policy)(torch.as_tensor(norm.apply(obs))).argmax(-1).numpy()


def train_offline(cfg: DictConfig, run_dir: str | Path | None = None) -> OfflineResult:
    """Steps 1-5 of the module doc; returns the run folder, metrics and export folder."""
    import torch

    from rlroute.export.cli import export_policy, fresh_model
    from rlroute.train.envs import plain_cfg
    from rlroute.train.normalize import RangeRunningMeanStd, RangeVecNormalize

    cfg = cfg.copy()
    lc = LearnerConfig.from_cfg(cfg.offline)
    run_dir = Path(run_dir if run_dir is not None else cfg.out_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.out_dir = str(run_dir)
    seed = int(cfg.seed)
    seed_everything(seed)
    torch.set_num_threads(int(cfg.agent.get("torch_threads", 1)))
    OmegaConf.save(OmegaConf.create(plain_cfg(cfg)), run_dir / "config.yaml")
    t0 = time.time()
    data, source = load_data(cfg, run_dir)
    frac = float(cfg.dataset.val_fraction)
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"dataset.val_fraction: expected a share in [0, 1), got {frac}")
    train, val = data.split(frac, seed)
    guard = cfg.export.get("enabled", True) and cfg.export.ood.get("enabled", True)
    if guard and len(train) < MIN_GUARD_RECORDS:  # ood_section: half for statistics, two quarters of >= 50
        raise ValueError(f"export.ood: the OOD guard is calibrated on the training records and needs >= "
                         f"{MIN_GUARD_RECORDS}, got {len(train)} (more dataset.episodes, or export.ood.enabled=false)")
    model = fresh_model(cfg, "PPO", seed)
    vn = RangeVecNormalize(model.get_env(), norm_obs=True, norm_reward=False,
                           clip_obs=float(cfg.agent.normalize.clip_obs))
    rms = RangeRunningMeanStd(shape=(train.obs.shape[1],))
    rms.update(train.obs.astype(np.float64))
    vn.obs_rms = rms  # type: ignore[assignment]  # a Box space: one RunningMeanStd, as RangeVecNormalize sets
    norm = ObsNorm.from_vecnormalize(vn, train.obs.shape[1])
    t1 = time.time()
    metrics: dict[str, Any] = fit(model, norm.apply(train.obs), norm.apply(train.next_obs), train, lc, seed)
    fit_s = time.time() - t1
    if len(val):
        metrics["val/agreement"] = float((greedy(model, norm, val.obs) == val.action).mean())
    model.save(run_dir / "model.zip")
    vn.save(str(run_dir / "vecnormalize.pkl"))
    np.save(run_dir / OBS_FILE, train.obs)
    shares = np.bincount(greedy(model, norm, train.obs), minlength=3) / len(train)
    metrics = {"algo": lc.algo, "offline": lc.name, "seed": seed, "records": len(data), "train_records": len(train),
               "val_records": len(val), "skipped": data.skipped, "dataset": source, "fit_seconds": fit_s,
               "seconds": time.time() - t0, "logged_action_shares": (np.bincount(train.action, minlength=3)
                                                                     / len(train)).tolist(),
               "policy_action_shares_on_train": shares.tolist(), "mean_logged_reward": float(train.reward.mean()),
               **metrics}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    export_dir = None
    if cfg.export.get("enabled", True):
        export_dir = run_dir / EXPORT_DIR
        obs_file = str(run_dir / OBS_FILE)
        export_policy(export_dir, cfg, run_dir=run_dir, n_verify=min(int(cfg.export.n_verify), len(train)),
                      obs_file=obs_file, seed=seed, overwrite=True, ood={"obs_file": obs_file, **cfg.export.ood})
    return OfflineResult(run_dir, metrics, export_dir)


def main() -> None:
    """Hydra entry: ``rlroute train-offline [overrides]`` (``conf/train_offline.yaml``)."""
    import hydra
    from rich.console import Console

    @hydra.main(config_path=str(CONF_DIR), config_name="train_offline", version_base="1.3")
    def _run(cfg: DictConfig) -> None:
        res = train_offline(cfg)
        m = res.metrics
        Console().print(f"trained {m['offline']} ({m['algo']}) on {m['train_records']:,} logged decisions in "
                        f"{m['fit_seconds']:.0f} s; held-out agreement with the log "
                        f"{m.get('val/agreement', float('nan')):.3f}; run folder: {res.run_dir}"
                        + (f"; export: {res.export_dir}" if res.export_dir else ""), soft_wrap=True)

    _run()
