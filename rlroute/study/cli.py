"""``rlroute study``: Hydra shell (``conf/study.yaml``) over :func:`rlroute.study.runner.run_study`."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from rlroute.env.build import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="study", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from rlroute.study.runner import run_study

    overrides = list(HydraConfig.get().overrides.task)
    command = " ".join(["rlroute study", *overrides])
    results = run_study(cfg, command)
    print(f"study: {len(results['scenarios'])} scenario(s), results in {cfg.out}"
          f"{'/pilot' if cfg.get('pilot') else ''}", file=sys.stderr)


def main() -> None:
    """Console entry: ``rlroute study [overrides]``."""
    _main()
