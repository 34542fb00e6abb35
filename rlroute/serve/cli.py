"""``rlroute serve``: run the routing service (Hydra config ``conf/serve.yaml``)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from rlroute.paths import CONF_DIR


def run(cfg: DictConfig) -> None:
    """Validate the config and serve until interrupted."""
    import uvicorn

    from rlroute.serve.app import create_app
    from rlroute.serve.config import parse_config

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    sc = parse_config({str(k): v for k, v in c.items()})
    uvicorn.run(create_app(sc), host=sc.host, port=sc.port, log_level=sc.log_level, access_log=False)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="serve")
def main(cfg: DictConfig) -> None:
    """Hydra entry point of ``rlroute serve``; a bad config exits with status 2 and the field at fault."""
    from rlroute.serve.config import ServeConfigError

    try:
        run(cfg)
    except ServeConfigError as e:
        print(f"rlroute serve: {e}", file=sys.stderr)
        raise SystemExit(2) from e
