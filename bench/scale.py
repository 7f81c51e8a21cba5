"""What the issue-17 scenarios (bench/latency.py, bench/open_streams.py) share: the file limit, their own
fake and gateways, per-round figures as median and spread, and the arguments that select them."""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.full import gateway_spec
from bench.procs import GatewaySpec, Server, start_fake, start_gateway

LATENCY = "latency"
STREAMS_10K = "streams10k"
NAMES = (LATENCY, STREAMS_10K)
FULL_NAME = "uv-full"
BARE_NAME = "uv-1w"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--streams",
        type=int,
        metavar="N",
        help=f"open streams held by '{STREAMS_10K}' (default 10000, or 2000 with --quick)",
    )
    parser.add_argument(
        "--latency-target",
        choices=(FULL_NAME, BARE_NAME),
        default=FULL_NAME,
        help=f"the gateway '{LATENCY}' measures against the fake: {FULL_NAME} (every stage, the issue's)"
        f" or {BARE_NAME} (the bare pipelines: what the stages add, by difference)",
    )


def wanted(scenarios: str | None) -> tuple[list[str], str | None]:
    """(the issue-17 scenarios named or implied, what --scenarios names besides them or None).

    A run that names nothing runs both; a run that names only other scenarios runs neither."""
    if not scenarios:
        return list(NAMES), None
    names = [p.strip() for p in scenarios.split(",") if p.strip()]
    mine = [n for n in NAMES if n in names]
    rest = [n for n in names if n not in NAMES]
    return mine, ",".join(rest) if rest else ("" if mine else scenarios)


def raise_nofile(wanted: int) -> str | None:
    """Raise this process's RLIMIT_NOFILE to `wanted`; the processes it starts inherit it. The soft limit
    goes up to the hard one; past it only where this process may (root). A note when it did not reach."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    if hard == resource.RLIM_INFINITY or hard >= wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return f"the file limit's hard value {hard} is below the {wanted} needed: raise it (ulimit -Hn)"
    return f"the file limit's hard value {hard} was below the {wanted} needed: raised (privileged)"


@dataclass(frozen=True)
class Gateway:
    server: Server
    headers: bytes  # sent with every request (the full gateway's Authorization)


def start_fake_for(stack: contextlib.ExitStack, workdir: Path, name: str) -> Server:
    """A fake Ollama of its own; the timing comes from the model's name (procs.TIMED_MODELS)."""
    fake = start_fake(name, workdir, 64, 0.0)
    stack.callback(fake.stop)
    return fake


def start_gateways(
    stack: contextlib.ExitStack,
    workdir: Path,
    names: Iterable[str],
    ollama_port: int,
    max_connections: int,
    notes: list[str],
    suffix: str,
) -> dict[str, Gateway]:
    """uv-1w (bare pipelines, as bench/targets.py builds it) and/or uv-full (the repository's pipelines
    with every stage, PostgreSQL and Redis), one worker each, started together."""
    specs: list[tuple[GatewaySpec, bytes]] = []
    for name in names:
        if name in (BARE_NAME, FULL_NAME):
            found = gateway_spec(stack, workdir, name, full=name == FULL_NAME, notes=notes)
            if found is not None:
                specs.append(found)
    started = {}
    for spec, headers in specs:
        server = start_gateway(spec, workdir, ollama_port, suffix, max_connections)
        stack.callback(server.stop)
        started[spec.name] = Gateway(server, headers)
    for gateway in started.values():
        gateway.server.wait_ready("/health", timeout_s=90.0)
    return started


@dataclass(frozen=True)
class Spread:
    """A figure over rounds: the median, the smallest and the largest."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        kept = [v for v in values if v == v]  # NaN: nothing measured
        if not kept:
            nan = float("nan")
            return cls(nan, nan, nan)
        return cls(statistics.median(kept), min(kept), max(kept))

    def text(self, sign: bool = True, digits: int = 2) -> str:
        if self.median != self.median:
            return "n/a"
        form = f"{'+' if sign else ''}.{digits}f"
        if self.low == self.high:
            return f"{self.median:{form}}"
        return f"{self.median:{form}} ({self.low:{form}}..{self.high:{form}})"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
