"""``rlroute train [overrides] [-m]``: the Hydra shell over :func:`rlroute.train.trainer.train`.

Examples::

    rlroute train experiment=quickstart
    rlroute train experiment=tiny agent=maskable_ppo logger=wandb
    rlroute train -m experiment=quickstart seed=0,1,2,3,4
    rlroute train -m experiment=quickstart sweep=optuna

Run folders are named by the choices made: ``outputs/train/<experiment>/<agent>-seed<seed>-<time>`` for a
single run, ``multirun/train/<experiment>/<time>/<job>-<agent>-seed<seed>`` (``default`` without an experiment) for each job of a multirun.
The function returns the mean validation reward, which Hydra's Optuna sweeper maximises.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# Defaults for Hydra's own settings, inserted unless the command line sets them (conf/config.yaml is shared
# by every subcommand, so training's folder naming lives with training).
RUN_DEFAULTS: dict[str, str] = {
    "hydra.job.name": "train",
    "hydra.run.dir": "outputs/train/${oc.select:experiment_name,default}/"
    "${agent.name}-seed${seed}-${now:%Y%m%d-%H%M%S}",
    "hydra.sweep.dir": "multirun/train/${oc.select:experiment_name,default}/"
    "${now:%Y%m%d-%H%M%S}",
    "hydra.sweep.subdir": "${hydra.job.num}-${agent.name}-seed${seed}",
}


def with_run_defaults(argv: list[str]) -> list[str]:
    """``argv`` plus the :data:`RUN_DEFAULTS` overrides it does not set itself."""
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a}
    # Quoted: the override grammar would read the comma of oc.select as a sweep.
    return [*argv, *(f"{k}='{v}'" for k, v in RUN_DEFAULTS.items() if k not in given)]


# Absolute path: a relative one is read as a Python module path when rlroute is imported as a package.
@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    from rlroute.train.trainer import train

    return train(cfg)


def main() -> None:
    """Console entry (``rlroute train``): Hydra reads ``sys.argv``."""
    sys.argv = [sys.argv[0], *with_run_defaults(sys.argv[1:])]
    _hydra_main()
