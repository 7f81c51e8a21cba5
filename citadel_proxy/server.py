"""Starting the gateway: uvicorn (the default) or hypercorn, one process or several workers."""

from __future__ import annotations

import errno
import functools
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypercorn.config import Config as HypercornConfig

from citadel_proxy.config.schema import Config
from citadel_proxy.fleet.fleet import WORKERS_ENV
from citadel_proxy.http.head_limits import HeadLimits
from citadel_proxy.observability.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from citadel_proxy.supervisor import run_workers, watch_shutdown

APP_FACTORY = "citadel_proxy.asgi:from_environment"
GRACEFUL_S = 30.0


def serve(config: Config, config_file: Path, bind: str | None, workers: int | None) -> int:
    # Workers import the app themselves, so they find the config through the environment.
    os.environ["CITADEL_CONFIG"] = str(config_file.resolve())
    address = bind or f"{config.gateway.host}:{config.gateway.port}"
    count = workers or config.gateway.workers
    # Each worker takes its share of every backend's max_concurrent when no Redis counts for all.
    os.environ[WORKERS_ENV] = str(count)
    limits = HeadLimits.of(config.gateway)
    # Bound before anything else starts, so a taken port is one line and exit 2, not a traceback.
    try:
        bind_server = _bind_uvicorn if config.gateway.server == "uvicorn" else _bind_hypercorn
        run = bind_server(address, limits, count)
    except OSError as exc:
        sys.stderr.write(f"citadel-proxy: cannot listen on {address}: {_why(exc)}\n")
        return 2
    if count > 1:
        # Spawned workers import prometheus_client afresh, after this variable is set.
        metrics_dir = Path(config.paths.data) / "prometheus"
        prepare_multiprocess_dir(metrics_dir)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    # The app configures JSON logging in each worker; this one line is for the person who started it.
    sys.stderr.write(
        f"citadel-proxy: serving on http://{address} ({config.gateway.server}, {count} worker(s))\n"
    )
    return run(count)


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (another gateway, or another program, holds the port)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    return exc.strerror or str(exc)


def _bind_hypercorn(address: str, limits: HeadLimits, count: int) -> Callable[[int], int]:
    server = hypercorn_config(address, limits)
    if count == 1:
        return functools.partial(_serve_hypercorn, server, [server.create_sockets()], limits)
    _claim(address)
    # hypercorn sets SO_REUSEPORT on the sockets it creates when it is told of several workers.
    server.workers = count
    each = [server.create_sockets()]
    # Port 0: the kernel picked one for the first socket; the other workers' sockets join it there.
    host, port = each[0].insecure_sockets[0].getsockname()[:2]
    server.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    each += [server.create_sockets() for _ in range(count - 1)]
    for sockets in each:
        for sock in sockets.insecure_sockets:
            # Listening from here: a socket whose worker is still starting queues its share of the
            # connections instead of leaving them all to the worker that listened first.
            sock.listen(server.backlog)
    return functools.partial(_serve_hypercorn, server, each, limits)


def _serve_hypercorn(server: HypercornConfig, each: list[Any], limits: HeadLimits, count: int) -> int:
    try:
        if count == 1:
            # In this process (what hypercorn's run() does with workers=0): no supervisor, less memory.
            hypercorn_worker(server, each[0], limits)
            return 0
        kwargs = [{"config": server, "sockets": sockets, "limits": limits} for sockets in each]
        return run_workers(hypercorn_worker, kwargs, GRACEFUL_S)
    finally:
        for sockets in each:
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
                sock.close()


def hypercorn_worker(
    config: HypercornConfig, sockets: Any, limits: HeadLimits, shutdown_event: Any = None
) -> None:
    """One spawned worker: it imports hypercorn afresh, so the head limits are installed here."""
    from citadel_proxy.http import hypercorn_guard

    hypercorn_guard.install(limits)
    _hypercorn_worker(config)(config=config, sockets=sockets, shutdown_event=shutdown_event)


def hypercorn_config(bind: str, limits: HeadLimits) -> HypercornConfig:
    server = HypercornConfig()
    server.bind = [bind]
    server.worker_class = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    server.application_path = f"{APP_FACTORY}()"
    server.graceful_timeout = GRACEFUL_S
    server.keep_alive_timeout = limits.keep_alive_s
    # By default hypercorn closes a keep-alive connection after 1000 requests; nginx would reconnect.
    server.keep_alive_max_requests = 1_000_000
    server.h11_max_incomplete_size = limits.max_bytes
    server.accesslog = None
    # A Logger, not "-": records go through the root handler, as JSON like every other line.
    server.errorlog = logging.getLogger("hypercorn.error")
    server.include_server_header = False
    return server


def _hypercorn_worker(server: HypercornConfig) -> Any:
    if server.worker_class == "uvloop":
        from hypercorn.asyncio.run import uvloop_worker

        return uvloop_worker
    from hypercorn.asyncio.run import asyncio_worker

    return asyncio_worker


def _bind_uvicorn(address: str, limits: HeadLimits, count: int) -> Callable[[int], int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if count > 1:
        _claim(address)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_listen(host, int(port), reuse_port=count > 1))
            # Port 0: the kernel picked one for the first socket; the others join it there.
            port = str(socks[0].getsockname()[1])
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return functools.partial(_serve_uvicorn, socks, limits)


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    # IPPROTO_TCP, not the default 0: the standard asyncio loop (without uvloop) sets TCP_NODELAY only on
    # connections accepted from a socket that says it is TCP, and without it a response written in two
    # parts (head, then body) waits for the client's delayed ACK, about 40 ms.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _claim(address: str) -> None:
    """EADDRINUSE when anything holds the port, even with SO_REUSEPORT.

    Several workers listen on sockets of their own with SO_REUSEPORT: on one shared socket, the worker
    that wakes first accepts a whole burst of connections (uvloop accepts until the queue is empty),
    and keep-alive connections (nginx's upstream pool, a client's) stay with it, so one worker served
    most requests while the other idled. With SO_REUSEPORT the kernel spreads new connections over the
    workers' sockets; but it would also let a second gateway (same user, SO_REUSEPORT too) share the
    port silently, so a socket without it is bound first: that fails when the port has any holder.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, int(port)))


def _serve_uvicorn(socks: list[socket.socket], limits: HeadLimits, count: int) -> int:
    try:
        if count == 1:
            uvicorn_worker(socks[0], limits)
            return 0
        kwargs = [{"sock": sock, "limits": limits} for sock in socks]
        return run_workers(uvicorn_worker, kwargs, GRACEFUL_S)
    finally:
        for sock in socks:
            sock.close()


def uvicorn_worker(sock: socket.socket, limits: HeadLimits, shutdown_event: Any = None) -> None:
    import uvicorn

    from citadel_proxy.http.uvicorn_guard import guarded_httptools

    has_uvloop = importlib.util.find_spec("uvloop") is not None
    server = uvicorn.Server(
        uvicorn.Config(
            APP_FACTORY,
            factory=True,
            loop="uvloop" if has_uvloop else "asyncio",
            # httptools with the head limits uvicorn lacks (size, lines, time): http.uvicorn_guard.
            http=guarded_httptools(limits),
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            # http.front trusts only gateway.trusted_proxies; uvicorn's would trust 127.0.0.1 too.
            proxy_headers=False,
            timeout_keep_alive=limits.keep_alive_s,
            timeout_graceful_shutdown=int(GRACEFUL_S),
            ws="none",
        )
    )
    if shutdown_event is not None:

        def stop() -> None:
            server.should_exit = True

        watch_shutdown(shutdown_event, stop)
    server.run(sockets=[sock])
