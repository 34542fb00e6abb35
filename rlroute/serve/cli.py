"""``rlroute serve``: run the routing service (Hydra config ``conf/serve.yaml``)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from rlroute.paths import CONF_DIR


def run(cfg: DictConfig) -> None:
    """Validate the config and serve until interrupted: the data plane (aiohttp) on ``host:port`` and the
    admin API (uvicorn) on its own listener ``admin_host:admin_port``, both on one event loop (uvloop when
    installed) sharing one router. SIGINT / SIGTERM stop the admin listener, then the data plane (its
    cleanup: watches stopped, clients closed, recorded observations saved)."""
    import asyncio
    import signal

    import uvicorn
    from aiohttp import web

    from rlroute.gcsettings import tune_gc
    from rlroute.serve.app import ROUTER, create_admin_app, create_app
    from rlroute.serve.config import parse_config

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    sc = parse_config({str(k): v for k, v in c.items()})
    app = create_app(sc)
    admin = uvicorn.Server(uvicorn.Config(create_admin_app(app[ROUTER], sc.max_body_bytes), host=sc.admin_host,
                                          port=sc.admin_port, lifespan="off", log_level=sc.log_level,
                                          access_log=False))

    async def both() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()  # runs the data plane's startup (first health checks and scrapes)
        # everything is loaded: the decision path's GC settings (rlroute.gcsettings; serve.gc)
        tune_gc(sc.gc_gen0_threshold, sc.gc_freeze)
        try:
            await web.TCPSite(runner, sc.host, sc.port, backlog=1024).start()
            side = asyncio.create_task(admin._serve())  # no signal capture of its own: stopped below
            await stop.wait()
            admin.should_exit = True
            await side
        finally:
            await runner.cleanup()

    factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
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
