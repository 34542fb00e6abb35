"""``rlroute serve``: run the routing service (Hydra config ``conf/serve.yaml``)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from rlroute.paths import CONF_DIR


def run(cfg: DictConfig) -> None:
    """Validate the config and serve until interrupted: the data plane on ``host:port`` and the admin API on
    its own listener ``admin_host:admin_port``, both on one event loop (uvloop when installed) sharing one
    router. SIGINT / SIGTERM stop the data plane (graceful, lifespan shutdown), then the admin listener."""
    import asyncio

    import uvicorn

    from rlroute.serve.app import create_admin_app, create_app
    from rlroute.serve.config import parse_config

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    sc = parse_config({str(k): v for k, v in c.items()})
    app = create_app(sc)
    common: dict[str, object] = {"log_level": sc.log_level, "access_log": False}
    data = uvicorn.Server(uvicorn.Config(app, host=sc.host, port=sc.port, **common))  # type: ignore[arg-type]
    admin = uvicorn.Server(uvicorn.Config(create_admin_app(app.state.router, sc.max_body_bytes), host=sc.admin_host,
                                          port=sc.admin_port, lifespan="off", **common))  # type: ignore[arg-type]

    async def both() -> None:
        side = asyncio.create_task(admin._serve())  # no signal capture of its own: the data plane's stops it
        try:
            await data.serve()
        finally:
            admin.should_exit = True
            await side

    with asyncio.Runner(loop_factory=data.config.get_loop_factory()) as runner:
        runner.run(both())


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="serve")
def main(cfg: DictConfig) -> None:
    """Hydra entry point of ``rlroute serve``; a bad config exits with status 2 and the field at fault."""
    from rlroute.serve.config import ServeConfigError

    try:
        run(cfg)
    except ServeConfigError as e:
        print(f"rlroute serve: {e}", file=sys.stderr)
        raise SystemExit(2) from e
