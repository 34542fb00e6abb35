"""``rlroute study``: :func:`run_study` (the study of a ``conf/study.yaml`` config, either mode) and its Hydra
shell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from rlroute.paths import CONF_DIR
from rlroute.study.lowo import run_lowo
from rlroute.study.runner import run_scenarios


def run_study(study: DictConfig, command: str = "rlroute study") -> dict[str, Any]:
    """The whole study of ``study`` (``conf/study.yaml``); returns and writes ``results.json``."""
    if bool(study.get("pilot")):
        study = study.copy()
        with open_dict(study):
            for key, value in study.pilot_settings.items():
                study[key] = value
            study.out = str(Path(str(study.out)) / "pilot")
    if str(study.mode) == "lowo":
        return run_lowo(study, command)
    if str(study.mode) != "scenarios":
        raise ValueError(f"study.mode: expected 'scenarios' or 'lowo', got {study.mode!r}")
    return run_scenarios(study, command)


@hydra.main(config_path=str(CONF_DIR), config_name="study", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)
    command = " ".join(["rlroute study", *overrides])
    results = run_study(cfg, command)
    print(f"study: {len(results['scenarios'])} scenario(s), results in {cfg.out}"
          f"{'/pilot' if cfg.get('pilot') else ''}", file=sys.stderr)


def main() -> None:
    """Console entry: ``rlroute study [overrides]``."""
    _main()
