"""Entry point for ASGI servers: `citadel_proxy.asgi:from_environment()` reads CITADEL_CONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.types import ASGIApp

from citadel_proxy.app import create_app
from citadel_proxy.config import load_config

DEFAULT_CONFIG = "conf/citadel.yaml"


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("CITADEL_CONFIG") or DEFAULT_CONFIG)


def from_environment() -> ASGIApp:
    return create_app(load_config(config_path()))
