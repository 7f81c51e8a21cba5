"""Starting hypercorn programmatically, with uvloop when it is installed."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from hypercorn.config import Config as HypercornConfig
from hypercorn.run import run

from citadel_proxy.config.schema import Config
from citadel_proxy.observability.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from citadel_proxy.supervisor import run_workers


def hypercorn_config(config: Config, bind: str, workers: int) -> HypercornConfig:
    server = HypercornConfig()
    server.bind = [bind]
    server.workers = workers
    server.worker_class = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    server.application_path = "citadel_proxy.asgi:from_environment()"
    server.graceful_timeout = 30.0
    server.keep_alive_timeout = 75.0
    server.h11_max_incomplete_size = 64 * 1024
    server.accesslog = None
    # A Logger, not "-": records go through the root handler, as JSON like every other line.
    server.errorlog = logging.getLogger("hypercorn.error")
    server.include_server_header = False
    return server


def serve(config: Config, config_file: Path, bind: str | None, workers: int | None) -> int:
    # Workers import the app themselves, so they find the config through the environment.
    os.environ["CITADEL_CONFIG"] = str(config_file.resolve())
    address = bind or f"{config.gateway.host}:{config.gateway.port}"
    count = workers or config.gateway.workers
    server = hypercorn_config(config, address, count)
    if count == 1:
        # In this process: no supervisor, less memory; SIGTERM and SIGINT stop it gracefully.
        server.workers = 0
        return run(server)
    # Spawned workers import prometheus_client afresh, after this variable is set.
    metrics_dir = Path(config.paths.data) / "prometheus"
    prepare_multiprocess_dir(metrics_dir)
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    return run_workers(server, count)
