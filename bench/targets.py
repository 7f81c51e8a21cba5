"""Starting everything a run measures: fake Ollamas, the nginx hop and the gateways, on loopback."""

from __future__ import annotations

import contextlib
import http.client
import sys
from pathlib import Path

from bench.full import prepare
from bench.nginx import find_nginx, start_nginx
from bench.procs import (
    GatewaySpec,
    Server,
    bare_pipelines,
    find_tool,
    full_pipelines,
    start_fake,
    start_gateway,
)
from bench.report import FULL as FULL_NAME
from bench.report import UVICORN_1W
from bench.scenarios import TOKENS, Scenario, Target

SLOW_TOKEN_DELAY_MS = 100.0
# Held-open streams need one upstream connection each; the production default (256) would queue them.
SLOW_MAX_CONNECTIONS = 1024
# Two workers only matter where there is enough concurrency to share, so they run the c32 scenarios
# (and the held-open streams, for peak RSS per worker): this keeps the full run under six minutes.
TWO_WORKERS = ("chat c32", "stream c32", "voice c32", "gui c32", "slow")
# The full pipelines are compared with the bare uv-1w on non-streaming chat, voice and embeddings.
FULL = ("chat ", "voice ", "embed")
# Runs per round of uv-full and uv-1w in the scenarios whose ratio is checked (issue 17): one run of each
# per round left the check at the mercy of whatever else the machine did meanwhile. They run in pairs, one
# right after the other (bench/report.py takes the ratio of each pair): the machines these runs get drift
# by up to 2x within a round, and two runs seconds apart see the same machine.
FULL_RUNS = 3
COMPARED = (UVICORN_1W, FULL_NAME)
CHECKED = ("chat ", "voice ")
# Granian (a Rust HTTP server) is measured beside them as the issue asks, on the main scenarios only;
# `gateway.server` does not offer it (it spent more CPU per request than uvicorn in every scenario but
# the held-open streams, and held twice the memory per open stream).
GRANIAN = ("chat ", "stream ", "voice c", "slow")
GATEWAYS = (
    GatewaySpec("hc-1w"),
    GatewaySpec("hc-2w", workers=2, only=TWO_WORKERS),
    GatewaySpec("uv-1w", server="uvicorn"),
    GatewaySpec("uv-2w", server="uvicorn", workers=2, only=TWO_WORKERS),
    GatewaySpec("gr-1w", server="granian", only=GRANIAN),
)


def _start(stack: contextlib.ExitStack, server: Server) -> Server:
    stack.callback(server.stop)
    return server


def start_targets(
    stack: contextlib.ExitStack,
    workdir: Path,
    scenarios: list[Scenario],
    notes: list[str],
    with_full: bool = False,
) -> list[Target]:
    """direct, nginx (when installed), the GATEWAYS and uv-full (for its scenarios, or `with_full`); each
    with a fast and a slow fake behind."""
    slow = any(s.slow for s in scenarios)
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
    bare_pipelines(workdir)
    specs = list(GATEWAYS)
    if find_tool("granian") is None:
        notes.append("granian is not installed (make bench installs it): no gr-1w")
        specs = [spec for spec in specs if spec.server != "granian"]
    headers = b""
    wants_full = with_full or any(s.name.startswith(FULL) for s in scenarios)
    if wants_full and (full := prepare(stack, notes)) is not None:
        full_pipelines(workdir)
        specs.append(
            GatewaySpec("uv-full", server="uvicorn", pipelines="pipelines-full", extra=full.extra, only=FULL)
        )
        headers = full.headers
    _log("starting " + ", ".join(spec.name for spec in specs))
    # All at once: their imports overlap instead of queueing one after another.
    started = []
    for spec in specs:
        gateway = _start(stack, start_gateway(spec, workdir, fast.port))
        held = gateway
        if any(s.slow and spec.runs(s.name) for s in scenarios):
            held = _start(stack, start_gateway(spec, workdir, late.port, "-slow", SLOW_MAX_CONNECTIONS))
        started.append((spec, gateway, held))
    for spec, gateway, held in started:
        for server in (gateway,) if held is gateway else (gateway, held):
            server.wait_ready("/health", timeout_s=90.0, processes=spec.processes)
        extra = headers if spec.extra else b""
        targets.append(Target(spec.name, True, gateway, gateway.port, held, held.port, extra, spec.only))
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


def run_order(order: list[Target], scenario: Scenario) -> list[Target]:
    """The runs of one scenario in one round: each target that runs it once, in `order`, except that in
    the scenarios whose ratio is checked uv-1w and uv-full run FULL_RUNS pairs where the first of them
    comes, back to back, which of the two goes first alternating from pair to pair."""
    running = [t for t in order if t.runs(scenario)]
    pair = [t for t in running if t.name in COMPARED]
    if len(pair) < 2 or not scenario.name.startswith(CHECKED):
        return running
    runs: list[Target] = []
    for target in running:
        if target is pair[0]:
            for n in range(FULL_RUNS):
                runs += pair if n % 2 == 0 else pair[::-1]
        elif target is not pair[1]:
            runs.append(target)
    return runs
