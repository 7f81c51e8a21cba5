"""Entry point for ASGI servers: `citadel_proxy.asgi:from_environment()` reads CITADEL_CONFIG."""

from __future__ import annotations

from starlette.types import ASGIApp

from citadel_proxy.app import create_app
from citadel_proxy.config import config_path, load_config
from citadel_proxy.memory import return_large_blocks


def from_environment() -> ASGIApp:
    # Here rather than in create_app: it tunes the whole process, which is the server's worker.
    return_large_blocks()
    path = config_path()
    return create_app(load_config(path), config_file=path)
