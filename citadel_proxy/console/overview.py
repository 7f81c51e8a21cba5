"""The Overview's live snapshot, pushed as server-sent events: backends, GPUs, traffic, TTFT, errors.

Traffic figures come from the Prometheus exposition (every worker's sum in multiprocess mode), read
once per interval; rates and time-to-first-token quantiles are taken over a rolling window of the
snapshots this stream has seen, so a figure describes the last minute, not the process's life.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from citadel_proxy.console.backends import BackendState, backend_states
from citadel_proxy.fleet.wire import QueueReport, queues
from citadel_proxy.services import Services
from citadel_proxy.system.gpu import GpuReport

# How many snapshots the rolling window holds (30 at the default 2 s: one minute).
WINDOW = 30
# A stream ends after this long; EventSource reconnects by itself, and a server shutting down never
# waits on an Overview left open in a tab.
STREAM_S = 60.0


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    route: str
    p50_s: float | None
    p95_s: float | None
    count: int


class ErrorCount(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    count: int


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    backends: list[BackendState]
    gpus: GpuReport
    in_flight: int
    queues: list[QueueReport]
    requests_per_s: float
    window_s: float
    ttft: list[Latency]
    errors: list[ErrorCount]


class Counters(msgspec.Struct, frozen=True, kw_only=True):
    """What one exposition read gives: cumulative counts, to be subtracted across the window."""

    at: float
    requests: float
    active: float
    buckets: dict[str, dict[float, float]]
    errors: dict[str, float]


def read_counters(exposition: bytes, now: float) -> Counters:
    requests = active = 0.0
    buckets: dict[str, dict[float, float]] = collections.defaultdict(dict)
    errors: dict[str, float] = collections.defaultdict(float)
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            if sample.name == "citadel_requests_total":
                requests += sample.value
                if int(sample.labels.get("status", "0") or 0) >= 500:
                    errors[f"HTTP {sample.labels['status']}"] += sample.value
            elif sample.name == "citadel_active_streams":
                active += sample.value
            elif sample.name == "citadel_time_to_first_token_seconds_bucket":
                buckets[sample.labels["route"]][float(sample.labels["le"])] = sample.value
            elif sample.name == "citadel_upstream_errors_total":
                errors[f"upstream {sample.labels['kind']}"] += sample.value
    return Counters(at=now, requests=requests, active=active, buckets=dict(buckets), errors=dict(errors))


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def summarise(oldest: Counters, newest: Counters) -> tuple[float, list[Latency], list[ErrorCount]]:
    span = max(newest.at - oldest.at, 1e-9)
    rate = (newest.requests - oldest.requests) / span if newest.at > oldest.at else 0.0
    latencies = []
    for route, cumulative in sorted(newest.buckets.items()):
        before = oldest.buckets.get(route, {})
        delta = {le: count - before.get(le, 0.0) for le, count in cumulative.items()}
        total = int(delta.get(float("inf"), 0.0))
        latencies.append(
            Latency(route=route, p50_s=quantile(delta, 0.5), p95_s=quantile(delta, 0.95), count=total)
        )
    errors = [
        ErrorCount(kind=kind, count=int(count - oldest.errors.get(kind, 0.0)))
        for kind, count in sorted(newest.errors.items())
        if count - oldest.errors.get(kind, 0.0) > 0
    ]
    return rate, latencies, errors


def _baseline(window: collections.deque[Counters]) -> Counters:
    """The window's oldest read; on a stream's first snapshot, zero histograms and errors (everything
    since the start) and no rate, so a fresh page has figures at once."""
    if len(window) > 1:
        return window[0]
    first = window[0]
    return Counters(at=first.at, requests=first.requests, active=first.active, buckets={}, errors={})


async def snapshots(services: Services, interval_s: float) -> AsyncIterator[Snapshot]:
    window: collections.deque[Counters] = collections.deque(maxlen=WINDOW)
    while True:
        backends, gpus = await asyncio.gather(backend_states(services), services.gpu_probe.read())
        now = time.monotonic()
        exposition = await asyncio.to_thread(services.metrics.exposition)
        window.append(read_counters(exposition, now))
        rate, latencies, errors = summarise(_baseline(window), window[-1])
        yield Snapshot(
            at=time.time(),
            backends=backends,
            gpus=gpus,
            in_flight=int(window[-1].active),
            queues=queues(services.fleet.admission),
            requests_per_s=round(rate, 3),
            window_s=round(window[-1].at - window[0].at, 1),
            ttft=latencies,
            errors=errors,
        )
        await asyncio.sleep(interval_s)


async def event_stream(services: Services, interval_s: float) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    ends = time.monotonic() + STREAM_S
    async for snapshot in snapshots(services, interval_s):
        yield b"event: snapshot\ndata: " + msgspec.json.encode(snapshot) + b"\n\n"
        if time.monotonic() >= ends:
            return
