"""Starting everything a run measures: fake Ollamas, the nginx hop and the gateways, on loopback."""

from __future__ import annotations

import contextlib
import http.client
import sys
from pathlib import Path

from bench.nginx import find_nginx, start_nginx
from bench.procs import Server, start_fake, start_gateway
from bench.scenarios import TOKENS, Target

SLOW_TOKEN_DELAY_MS = 100.0
# Held-open streams need one upstream connection each; the production default (256) would queue them.
SLOW_MAX_CONNECTIONS = 1024


def _start(stack: contextlib.ExitStack, server: Server) -> Server:
    stack.callback(server.stop)
    return server


def start_targets(stack: contextlib.ExitStack, workdir: Path, slow: bool, notes: list[str]) -> list[Target]:
    """direct, nginx (when installed), gw-1w, gw-2w; each with a fast and (if asked) a slow fake behind."""
    _log("starting fake Ollama" + (" x2" if slow else ""))
    fast = _start(stack, start_fake("fake", workdir, TOKENS, 0.0))
    late = _start(stack, start_fake("fake-slow", workdir, TOKENS, SLOW_TOKEN_DELAY_MS)) if slow else fast
    targets = [Target("direct", False, fast, fast.port, late, late.port)]
    binary = find_nginx()
    if binary is None:
        notes.append("nginx is not installed: no nginx baseline")
    else:
        _log("starting nginx")
        nginx, (port, slow_port) = start_nginx(binary, workdir, [fast.port, late.port])
        targets.append(Target("nginx", False, _start(stack, nginx), port, nginx, slow_port))
    for workers in (1, 2):
        name = f"gw-{workers}w"
        _log(f"starting {name}")
        gateway = _start(stack, start_gateway(name, workdir, fast.port, workers))
        held = gateway
        if slow:
            held = start_gateway(f"{name}-slow", workdir, late.port, workers, SLOW_MAX_CONNECTIONS)
            _start(stack, held)
        targets.append(Target(name, True, gateway, gateway.port, held, held.port))
    return targets


def route_exists(port: int, path: str) -> bool:
    """False when the gateway answers 404 (the route is not there yet)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            path,
            body=b'{"model":"phi3","input":"probe"}',
            headers={"Content-Type": "application/json"},
        )
        return conn.getresponse().status != 404
    finally:
        conn.close()


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
