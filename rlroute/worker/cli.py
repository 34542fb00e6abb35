"""``rlroute worker``: run one emulated SGLang-protocol worker (Hydra config ``conf/worker.yaml``)."""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rlroute.paths import CONF_DIR


def build_state(cfg: DictConfig | dict[str, Any]) -> Any:
    """Build the worker's state (engine over the instance model, fault knobs) from a config.

    Args:
        cfg: the ``conf/worker.yaml`` fields.

    Returns:
        A :class:`rlroute.worker.app.WorkerState` ready for :func:`rlroute.worker.app.create_app`.
    """
    from rlroute.worker.app import WorkerState
    from rlroute.worker.engine import Engine
    from rlroute.worker.faults import Faults
    from rlroute.worker.model import build_instance_model

    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(c, dict)
    model = build_instance_model(str(c["profile"]), dict(c.get("cache") or {}),
                                 c["mem_fraction_static"], int(c["block_size"]), c.get("scheduler"))
    engine = Engine(model, speedup=float(c["speedup"]), min_tick_s=float(c["min_tick_s"]))
    faults = Faults(**dict(c.get("faults") or {}))
    return WorkerState(engine, faults, model=str(c["model"]), pool=str(c["pool"]),
                       weight_load_s=float(c["weight_load_s"]))


def run(cfg: DictConfig) -> None:
    """Serve until interrupted."""
    serve_state(cfg, build_state(cfg))


def serve_state(cfg: DictConfig, state: Any) -> None:
    """Run uvicorn over an already built worker state."""
    import uvicorn

    from rlroute.worker.app import create_app

    app = create_app(state)
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level), access_log=False)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="worker")
def main(cfg: DictConfig) -> None:
    """Hydra entry point of ``rlroute worker``; a bad config exits with status 2 and the field at fault."""
    try:
        state = build_state(cfg)
    except (ValueError, KeyError, FileNotFoundError) as e:  # ProfileError is a ValueError
        print(f"rlroute worker: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    serve_state(cfg, state)
