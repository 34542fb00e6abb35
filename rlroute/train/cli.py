"""``rlroute train [overrides] [-m]``: the Hydra shell (``conf/train.yaml``) over :func:`rlroute.train.trainer.train`.

Examples::

    rlroute train experiment=quickstart
    rlroute train experiment=tiny agent=maskable_ppo logger=wandb
    rlroute train -m experiment=quickstart seed=0,1,2,3,4

Run folders are named by the choices made (``conf/train.yaml``): ``outputs/train/<experiment>/<agent>-seed<seed>-<time>``
for a single run, ``multirun/train/<experiment>/<time>/<job>-<agent>-seed<seed>`` (``default`` without an
experiment) for each job of a multirun. The function returns the mean validation reward (the objective of a
multirun's jobs). Hyper-parameter searches run on Ray Tune: ``rlroute tune`` (:mod:`rlroute.train.tune`).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rlroute.paths import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Console entry (``rlroute train``): trains, prints the result line, returns the sweep objective."""
    from rich.console import Console

    from rlroute.train.trainer import train_run

    result = train_run(cfg)
    m = result.metrics
    Console().print(f"trained {m['agent']} for {m['total_timesteps']:,} decisions in {m['train_seconds']:.0f} s; "
                    f"best validation reward {result.objective:.4f} ({m['selected']} snapshot); "
                    f"run folder: {result.run_dir}", soft_wrap=True)
    return result.objective
