"""Experiment tracking for a training run: SB3 logger writers and (opt-in, lazy) Weights & Biases.

``conf/logger/<name>.yaml`` lists SB3 output formats (``csv``, ``tensorboard``, ``stdout``, ``json``) and,
for ``logger=wandb``, a ``wandb`` block. wandb is imported only here and only when that block exists, and
it runs offline unless ``WANDB_MODE`` says otherwise. Training curves reach W&B through a KVWriter, so the
same ``rollout/``, ``train/``, ``route/``, ``cluster/`` and ``eval/`` keys appear in every backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from stable_baselines3.common.logger import KVWriter, Logger, make_output_format


class WandbOutputFormat(KVWriter):
    """SB3 KVWriter that forwards numeric key/values to ``wandb.log`` at the env-step count."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """Log the numeric values of one dump (strings and other objects are skipped)."""
        data = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key) or ()
            if "wandb" in excluded:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                data[key] = value
            elif hasattr(value, "item") and getattr(value, "size", 2) == 1:
                data[key] = value.item()
        if data:
            self.run.log({**data, "global_step": step})

    def close(self) -> None:
        """Nothing to close: the run is finished by :meth:`Tracker.finish`."""


class Tracker:
    """One training run's logging backends.

    Attributes:
        logger: the SB3 logger (set on the model with ``model.set_logger``).
        run: the wandb run, or ``None`` when W&B is off.
    """

    def __init__(self, logger_cfg: DictConfig, run_dir: Path, cfg: DictConfig, name: str) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        formats = [str(f) for f in logger_cfg.get("formats", [])]
        writers: list[KVWriter] = [make_output_format(f, str(run_dir)) for f in formats]
        self.run: Any = None
        self.log_artifacts = bool((logger_cfg.get("wandb") or {}).get("log_artifact", False))
        if logger_cfg.get("wandb") is not None:
            self.run = self._start_wandb(logger_cfg.wandb, run_dir, cfg, name)
            writers.append(WandbOutputFormat(self.run))
        self.logger = Logger(folder=str(run_dir), output_formats=writers)

    @staticmethod
    def _start_wandb(wcfg: DictConfig, run_dir: Path, cfg: DictConfig, name: str) -> Any:
        import wandb  # lazy: only runs with logger=wandb pay for it

        os.environ.setdefault("WANDB_MODE", str(wcfg.get("mode") or "offline"))
        os.environ.setdefault("WANDB_SILENT", "true")
        from rlroute.train.envs import plain_cfg

        return wandb.init(
            project=str(wcfg.project),
            entity=wcfg.get("entity"),
            group=wcfg.get("group") or str(cfg.get("experiment_name", "default")),
            tags=list(wcfg.get("tags") or []),
            name=name,
            dir=os.environ.get("WANDB_DIR", str(run_dir)),
            config=plain_cfg(cfg),
            reinit="finish_previous",
        )

    def log_summary(self, metrics: dict[str, Any]) -> None:
        """Final metrics into the W&B run summary."""
        if self.run is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float | str):
                    self.run.summary[key] = value

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        """An evaluation table (list of flat dicts) as a W&B Table."""
        if self.run is None or not rows:
            return
        import wandb

        columns: list[Any] = list(dict.fromkeys(k for row in rows for k in row))
        data = [[row.get(c) for c in columns] for row in rows]
        self.run.log({key: wandb.Table(columns=columns, data=data)})

    def log_image(self, key: str, path: str | Path) -> None:
        """A PNG (e.g. the Pareto plot) as a W&B image."""
        if self.run is None or not Path(path).is_file():
            return
        import wandb

        self.run.log({key: wandb.Image(str(path))})

    def log_artifact(self, folder: str | Path, name: str, kind: str = "model") -> None:
        """A folder (the exported policy, or the run's model files) as a W&B artifact."""
        if self.run is None or not self.log_artifacts or not Path(folder).is_dir():
            return
        import wandb

        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
        artifact = wandb.Artifact(safe, type=kind)
        artifact.add_dir(str(folder))
        self.run.log_artifact(artifact)

    def finish(self) -> None:
        """Close the writers and the W&B run."""
        self.logger.close()
        if self.run is not None:
            self.run.finish()
            self.run = None

