"""``rlroute export``: write a verified policy folder from a training run (or a fresh policy, for tests).

``@hydra.main`` is a thin shell over :func:`export_policy`, which tests call directly. Steps:

1. load ``model.zip`` + ``vecnormalize.pkl`` from ``run_dir`` (or initialise a PPO on the real env's spaces);
2. export the deterministic actor with the normalisation baked in (:mod:`rlroute.export.graph`);
3. record ``n_verify`` observations from the real env (or load ``obs_file``) and check that onnxruntime
   and SB3 choose the same actions with logits within ``logit_atol`` (:mod:`rlroute.export.verify`);
4. write ``manifest.json`` and move the folder into place — an export that fails verification leaves
   nothing at ``out``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rlroute import ENV_ID, __version__
from rlroute.export.graph import ObsNorm, OnnxableActor, export_onnx, load_run
from rlroute.export.manifest import (
    ACTION_MAP,
    FORMAT_VERSION,
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    current_schema,
    sha256_file,
    write_manifest,
)
from rlroute.export.ood import RANGE_FACTOR, RANGE_MARGIN, TARGET_FPR, ObsStats, calibrate, guard_layout
from rlroute.export.verify import LOGIT_ATOL, Recorded, record_observations, verify
from rlroute.paths import CONF_DIR


def _to_container(cfg: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        out = OmegaConf.to_container(cfg, resolve=False)
        assert isinstance(out, dict)
        return {str(k): v for k, v in out.items()}
    return dict(cfg or {})


def _env_config(run_dir: Path | None, cfg: Any) -> Any:
    """The config to rebuild the training env from: the run's ``config.yaml`` when it describes an env."""
    from omegaconf import OmegaConf

    if run_dir is not None and (run_dir / "config.yaml").is_file():
        run_cfg = OmegaConf.load(run_dir / "config.yaml")
        if all(k in run_cfg for k in ("workload", "quality", "cluster")):
            return run_cfg
    return cfg


def build_env(cfg: Any, split: str) -> Any:
    """The routing env of ``cfg`` on ``split`` (imported lazily: the env pulls the simulator)."""
    from rlroute.env import build_env as build

    return build(cfg, split=split)


def _record(env_cfg: Any, n: int, seed: int, split: str, obs_file: str | None) -> tuple[Recorded, str]:
    if obs_file:
        # .npy: observations only; .npz: arrays ``obs`` and optionally ``masks`` (bool[n, n_actions]).
        loaded = np.load(obs_file)
        masks = None
        if isinstance(loaded, np.lib.npyio.NpzFile) and "masks" in loaded:
            masks = loaded["masks"][:n].astype(bool)
        return Recorded(load_obs(obs_file)[:n], masks), f"file:{obs_file}"
    env = build_env(env_cfg, split=split)
    try:
        rec = record_observations(env, n, seed)
    finally:
        env.close()
    return rec, f"env:{ENV_ID} split={split} random-allowed-actions seed={seed}"


def fresh_model(env_cfg: Any, algo: str, seed: int) -> Any:
    """A freshly initialised (untrained) PPO / MaskablePPO on the real env's spaces."""
    env = build_env(env_cfg, split="train")
    if algo == "MaskablePPO":
        from sb3_contrib import MaskablePPO

        return MaskablePPO("MlpPolicy", env, seed=seed, device="cpu", n_steps=64)
    if algo != "PPO":
        raise ValueError(f"fresh_algo: expected PPO or MaskablePPO, got {algo!r}")
    from stable_baselines3 import PPO

    return PPO("MlpPolicy", env, seed=seed, device="cpu", n_steps=64)


def fit_norm(obs: np.ndarray, clip: float = 10.0, epsilon: float = 1e-8) -> ObsNorm:
    """``RangeVecNormalize``-style statistics (moments and range) of recorded observations (fresh exports
    exercise the baked path)."""
    obs64 = obs.astype(np.float64)
    return ObsNorm(True, obs64.mean(axis=0), obs64.var(axis=0), clip, epsilon, obs64.min(axis=0), obs64.max(axis=0),
                   float(len(obs64)))


def greedy_actor(model: Any, norm: ObsNorm, algo: str) -> Callable[[np.ndarray, np.ndarray], int]:
    """``(raw obs, mask) -> action`` of the exported policy (SB3 side, normalised as the graph does)."""
    masked = algo == "MaskablePPO"

    def act(obs: np.ndarray, mask: np.ndarray) -> int:
        x = norm.apply(obs[None, :])
        a, _ = model.predict(x, deterministic=True, action_masks=mask[None, :]) if masked else \
            model.predict(x, deterministic=True)
        return int(np.asarray(a).reshape(-1)[0])

    return act


def load_obs(path: str) -> np.ndarray:
    """Observations ``float32[n, dim]`` from a ``.npy`` file or a ``.npz`` file's array ``obs``."""
    loaded = np.load(path)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        if "obs" not in loaded:
            raise ValueError(f"{path}: expected an array named 'obs', found {loaded.files}")
        loaded = loaded["obs"]
    if loaded.ndim != 2:
        raise ValueError(f"{path}: expected float32[n, obs_dim] observations, got shape {loaded.shape}")
    return np.asarray(loaded, dtype=np.float32)


def ood_section(env_cfg: Any, stats: ObsStats | None, text: str, act: Callable[[np.ndarray, np.ndarray], int],
                o: dict[str, Any], seed: int) -> dict[str, Any]:
    """The manifest's ``ood`` field: training ``stats`` plus thresholds calibrated on validation observations.

    Two halves of ``n_calib // 2`` observations each, from different episodes of the ``val`` split driven by
    the exported policy itself (greedy: what it will see when served); the first half sets the thresholds,
    the second measures the false-positive rate (:func:`rlroute.export.ood.calibrate`). With
    ``o["calib_file"]`` (validation observations recorded elsewhere, in recording order), its first half fits
    and its second half measures, and ``o["obs_file"]``, when also given, holds the training observations
    the statistics come from. With ``o["obs_file"]`` alone (observations recorded elsewhere, e.g. from the
    serving path), shuffled with ``seed``, its first half gives the statistics instead of ``stats``, its
    third quarter fits the thresholds and its last quarter measures (each quarter in recording order).
    """
    from rlroute.features import build_schema

    where: dict[str, Any]
    if o.get("calib_file"):
        if o.get("obs_file"):
            stats = ObsStats.from_obs(load_obs(str(o["obs_file"])), f"file:{o['obs_file']}")
        cal = load_obs(str(o["calib_file"]))
        halves = [cal[: len(cal) // 2], cal[len(cal) // 2:]]
        where = {"split": f"file:{o['calib_file']}", "fit": "first half", "holdout": "second half"}
    elif o.get("obs_file"):
        obs = load_obs(str(o["obs_file"]))
        perm = np.random.default_rng(seed).permutation(len(obs))  # a recording in time order: no trend split
        n = len(obs)
        stats = ObsStats.from_obs(obs[perm[: n // 2]], f"file:{o['obs_file']} (first half)")
        # each calibration quarter back in recording order: the request window reads decisions in order
        halves = [obs[np.sort(perm[n // 2: 3 * n // 4])], obs[np.sort(perm[3 * n // 4:])]]
        where = {"split": f"file:{o['obs_file']}", "fit": "third quarter", "holdout": "last quarter"}
    else:
        seeds = [seed + 101, seed + 20_101]
        halves = []
        for s in seeds:
            env = build_env(env_cfg, split="val")
            try:
                halves.append(record_observations(env, int(o["n_calib"]) // 2, s, act).obs)
            finally:
                env.close()
        where = {"split": "val", "driven_by": "the exported policy (greedy)", "seeds": seeds}
    if stats is None:
        raise ValueError("export: the OOD guard needs training statistics: a run trained with VecNormalize, or "
                         "ood.obs_file (training observations) beside ood.calib_file")
    schema = build_schema(text)
    lay = guard_layout(schema)
    guard, record = calibrate(stats, schema.slices, halves[0], halves[1], float(o["target_fpr"]),
                              float(o["range_margin"]), lay["range_exempt"], lay["ignored"], lay["log_norm"],
                              float(o["range_factor"]), lay["saturation"], lay["window"])
    return {**guard.to_json(), "calibration": {**record, **where}}


def export_policy(
    out: str | Path,
    cfg: Any,
    run_dir: str | Path | None = None,
    fresh: bool = False,
    fresh_algo: str = "PPO",
    fresh_norm: bool = True,
    n_verify: int = 10_000,
    obs_file: str | None = None,
    split: str = "val",
    seed: int = 0,
    overwrite: bool = False,
    logit_atol: float = LOGIT_ATOL,
    ood: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export, verify and write a policy folder; return its manifest.

    Args:
        out: destination folder (created; must not exist unless ``overwrite``).
        cfg: composed Hydra config (env groups) used for a fresh policy or when the run has no config.
        run_dir: training run folder; required unless ``fresh``.
        fresh: export a freshly initialised ``fresh_algo`` policy instead of a run.
        fresh_norm: with ``fresh``, bake normalisation statistics fitted on the recorded observations.
        n_verify: observations ONNX and torch must agree on.
        obs_file: ``.npy`` observations to verify on instead of recording from the env.
        split: workload split to record observations on.
        seed: seeds the fresh policy and the recording.
        overwrite: replace an existing ``out``.
        logit_atol: largest allowed |ONNX logit - torch logit|.
        ood: the out-of-distribution guard's settings (``conf/export.yaml`` ``ood``): ``enabled``,
            ``n_train`` (rollouts of the ``train`` split for the training statistics of a fresh policy, or
            of a run without a recorded range; else for which recorded training minima recur, ``at_low``), ``n_calib``, ``target_fpr``, ``range_margin``,
            ``range_factor``, ``obs_file`` / ``calib_file`` (statistics and calibration from recorded
            observations instead, see :func:`ood_section`).

    Raises:
        ExportVerificationError: ONNX and torch disagree (nothing is written to ``out``).
    """
    from omegaconf import OmegaConf

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=true to replace it")
    rd = Path(run_dir) if run_dir else None
    env_cfg = _env_config(rd, cfg)
    text = OmegaConf.select(env_cfg, "features.text", default="hash") if OmegaConf.is_config(env_cfg) else (
        (env_cfg.get("features") or {}).get("text", "hash"))
    schema = current_schema(str(text or "hash"))
    rec, source = _record(env_cfg, n_verify, seed, split, obs_file)
    o = {"enabled": True, "n_train": 5000, "n_calib": 4000, "target_fpr": TARGET_FPR,
         "range_margin": RANGE_MARGIN, "range_factor": RANGE_FACTOR, "obs_file": None,
         "calib_file": None, **(ood or {})}
    stats: ObsStats | None = None
    if fresh:
        model, algo = fresh_model(env_cfg, fresh_algo, seed), fresh_algo
        dim = int(np.prod(model.observation_space.shape))
        train_rec = None
        if fresh_norm or o["enabled"]:  # "training" statistics of a fresh policy: rollouts of the train split
            train_rec, train_src = _record(env_cfg, int(o["n_train"]), seed, "train", None)
            stats = ObsStats.from_obs(train_rec.obs, train_src)
        norm = fit_norm(train_rec.obs) if fresh_norm and train_rec is not None else ObsNorm.identity(dim)
        train_cfg, metrics = _to_container(env_cfg), dict[str, Any]()
    else:
        if rd is None:
            raise ValueError("export: pass run_dir=<training run folder> (or fresh=true)")
        model, norm, algo = load_run(rd)
        dim = int(np.prod(model.observation_space.shape))
        train_cfg = _to_container(env_cfg)
        metrics_path = rd / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        stats = ObsStats.from_norm(norm, norm.count, f"run:{rd}/vecnormalize.pkl (every training observation)")
        if o["enabled"] and not o.get("obs_file"):  # the train split under this policy
            env = build_env(env_cfg, split="train")
            try:
                obs = record_observations(env, int(o["n_train"]), seed, greedy_actor(model, norm, algo)).obs
            finally:
                env.close()
            if stats is None:  # trained without a recorded range
                stats = ObsStats.from_obs(obs, f"env:{ENV_ID} split=train driven by the exported policy seed={seed}")
            else:  # the normalisation has no counts: which training minima recur, from these rollouts
                stats.at_low = (obs.astype(np.float64) == stats.low).sum(axis=0).astype(np.float64)
                stats.source += f"; at_low: {len(obs)} train-split rollouts of the exported policy, seed={seed}"
    n_actions = int(model.action_space.n)
    if dim != schema.dim or rec.obs.shape[1] != dim:
        raise ValueError(
            f"observation size mismatch: policy {dim}, recorded {rec.obs.shape[1]}, feature schema {schema.dim}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        onnx_path = tmp / ONNX_FILE
        export_onnx(
            OnnxableActor(model.policy, norm),
            dim,
            onnx_path,
            {"rlroute.feature_schema.hash": schema.hash, "rlroute.feature_schema.version": str(schema.version)},
        )
        report = verify(onnx_path, model, norm, rec, algo, source, atol=logit_atol)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "rlroute_version": __version__,
            "feature_schema": {"version": schema.version, "hash": schema.hash, "dim": schema.dim,
                               "text": schema.text},
            "obs_norm": norm.to_json(),
            "action_map": dict(ACTION_MAP),
            "env": {"id": ENV_ID, "version": int(ENV_ID.rsplit("-v", 1)[1])},
            "onnx": {
                "file": ONNX_FILE,
                "sha256": sha256_file(onnx_path),
                "opset": 20,
                "input": INPUT_NAME,
                "output": OUTPUT_NAME,
                "obs_dim": dim,
                "n_actions": n_actions,
                "normalisation": "baked into the graph: feed raw rlroute.features.extract output",
            },
            "source": {"run_dir": str(rd) if rd else None, "algo": algo, "masked": algo == "MaskablePPO",
                       "fresh": fresh},
            "training_config": train_cfg,
            "metrics": metrics,
            "verification": report.to_json(),
        }
        if o["enabled"]:  # stats is None only for a run without VecNormalize given ood.obs_file: read there
            manifest["ood"] = ood_section(env_cfg, stats, schema.text, greedy_actor(model, norm, algo), o, seed)
        write_manifest(tmp, manifest)
        tmp.chmod(0o755)  # mkdtemp makes it private; an exported policy is meant to be read by the router
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main() -> None:
    """Hydra entry: ``rlroute export run_dir=... out=...`` (config ``conf/export.yaml``)."""
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
    def _run(cfg: DictConfig) -> None:
        m = export_policy(
            out=cfg.out,
            cfg=cfg,
            run_dir=cfg.run_dir,
            fresh=bool(cfg.fresh),
            fresh_algo=str(cfg.fresh_algo),
            fresh_norm=bool(cfg.fresh_norm),
            n_verify=int(cfg.n_verify),
            obs_file=cfg.obs_file,
            split=str(cfg.split),
            seed=int(cfg.seed),
            overwrite=bool(cfg.overwrite),
            logit_atol=float(cfg.logit_atol),
            ood=dict(cfg.get("ood") or {}),
        )
        v = m["verification"]
        print(
            f"exported {m['source']['algo']} -> {cfg.out}: {v['n_obs']} observations, "
            f"action agreement {v['action_agreement']:.4f}, max |logit diff| {v['max_abs_logit_diff']:.2e}"
        )
        if "ood" in m:
            c = m["ood"]["calibration"]
            print(f"OOD guard: false positives {c['fpr_holdout']:.4f} on {c['n_holdout']} held-out validation "
                  f"observations (target <= {c['target_fpr']}, fit half {c['fpr_fit']:.4f})")

    _run()
