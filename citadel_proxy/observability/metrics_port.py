"""`monitoring.prometheus.port`: `/metrics` on a listener of its own, for networks where the scraper may
reach a metrics port but not the API.

The listener is a second, minimal Starlette app (the guarded `/metrics` route alone) served by uvicorn in
each worker's own event loop. Its socket has SO_REUSEPORT, so every worker listens on it and the kernel
spreads the scrapes: any worker answers with the sum over all of them (prometheus-client's multiprocess
files), so it does not matter which one does. The same `allow` list and `metrics` keys guard it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from citadel_proxy import errors
from citadel_proxy.http.responses import on_gateway_error, on_http_error, on_unexpected
from citadel_proxy.routes.metrics import guarded_metrics

if TYPE_CHECKING:
    from citadel_proxy.config.schema import Config
    from citadel_proxy.services import Services

_log = logging.getLogger(__name__)


def metrics_app(config: Config, services: Services) -> ASGIApp:
    routed = Starlette(
        routes=[Route("/metrics", guarded_metrics(config.monitoring.prometheus), methods=["GET"])],
        exception_handlers={
            errors.GatewayError: on_gateway_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )

    async def with_services(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {}).update(services=services, request_id="")
        await routed(scope, receive, send)

    return with_services


def listen(host: str, port: int) -> socket.socket:
    """The listener's socket, shared by the workers (SO_REUSEPORT); OSError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_metrics_port(config: Config, services: Services, stack: contextlib.AsyncExitStack) -> None:
    """Start the listener when `monitoring.prometheus.port` is set; `stack` stops it."""
    settings = config.monitoring.prometheus
    if settings.port is None or not settings.enabled:
        return
    import uvicorn

    class Listener(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The gateway's own server owns the process's signals; this one stops with the lifespan.
            yield

    sock = listen(settings.host, settings.port)
    server = Listener(
        uvicorn.Config(
            metrics_app(config, services),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ws="none",
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-port")
    _log.info("metrics on http://%s:%d/metrics", settings.host, settings.port)

    async def stop() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        sock.close()

    stack.push_async_callback(stop)
