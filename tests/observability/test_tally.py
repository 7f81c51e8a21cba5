"""The tally that the metrics stage counts into: the same series as counting directly, never a count lost."""

from __future__ import annotations

import asyncio
import math
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from citadel_proxy.fleet.metrics import BackendSeries, FleetMetrics
from citadel_proxy.observability.metrics import DURATION_BUCKETS, Metrics
from citadel_proxy.observability.tally import Tally

# Bounds themselves (a value equal to a bound belongs to its bucket), between them, under and over all.
VALUES = [0.0, 0.05, 0.050001, 0.1, 0.3, 1.0, 29.9, 30.0, 1800.0, 1800.5, 1e9, math.inf, -1.0]


def _pair() -> tuple[CollectorRegistry, Tally, Histogram, Counter, CollectorRegistry, Histogram, Counter]:
    tallied, direct = CollectorRegistry(), CollectorRegistry()
    tally = Tally()
    tallied.register(tally)
    series = []
    for registry in (tallied, direct):
        histogram = Histogram("d_seconds", "d", ["route"], buckets=DURATION_BUCKETS, registry=registry)
        counter = Counter("r_total", "r", ["route"], registry=registry)
        series.append((histogram, counter))
    (h1, c1), (h2, c2) = series
    return tallied, tally, h1, c1, direct, h2, c2


def test_folded_series_read_exactly_as_series_counted_one_by_one() -> None:
    tallied, tally, h1, c1, direct, h2, c2 = _pair()
    histogram, counter = tally.histogram(h1.labels("/a")), tally.counter(c1.labels("/a"))
    for value in VALUES:
        histogram.observe(value)
        h2.labels("/a").observe(value)
        counter.pending += 3
        c2.labels("/a").inc(3)
    # Twice, with more in between: a fold adds to what earlier folds put there.
    assert _without_created(generate_latest(tallied)) == _without_created(generate_latest(direct))
    for value in VALUES[:4]:
        histogram.observe(value)
        h2.labels("/a").observe(value)
    assert _without_created(generate_latest(tallied)) == _without_created(generate_latest(direct))


def test_a_collection_folds_first() -> None:
    metrics = Metrics()
    tally = metrics.tally
    child = tally.counter(metrics.requests.labels("/v1/chat/completions", "m", "200"))
    child.pending += 2
    labels = {"route": "/v1/chat/completions", "model": "m", "status": "200"}
    assert metrics.registry.get_sample_value("citadel_requests_total", labels) == 2.0
    assert child.pending == 0


def test_a_fold_from_another_thread_leaves_the_counts_for_the_loop() -> None:
    """Only the loop's thread folds: a count added while another thread folds could be lost."""
    metrics = Metrics()
    child = metrics.tally.counter(metrics.requests.labels("/r", "m", "200"))
    child.pending += 5
    worker = threading.Thread(target=metrics.tally.fold)
    worker.start()
    worker.join()
    assert child.pending == 5
    metrics.tally.fold()
    assert child.pending == 0
    labels = {"route": "/r", "model": "m", "status": "200"}
    assert metrics.registry.get_sample_value("citadel_requests_total", labels) == 5.0


async def test_the_running_app_folds_on_a_timer_and_at_close() -> None:
    metrics = Metrics()
    histogram = metrics.tally.histogram(metrics.request_duration.labels("/r"))
    metrics.tally.start(every_s=0.01)
    histogram.observe(0.3)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if metrics.request_duration.labels("/r")._sum.get() == 0.3:
            break
    assert metrics.request_duration.labels("/r")._sum.get() == 0.3
    histogram.observe(0.2)
    metrics.close()  # the last fold, and no timer left behind
    assert metrics.tally._timer is None
    assert metrics.request_duration.labels("/r")._sum.get() == 0.5


def test_a_gauge_goes_up_and_down_and_reads_exactly_when_collected() -> None:
    registry, tally = CollectorRegistry(), Tally()
    registry.register(tally)
    part = tally.gauge(Gauge("in_flight", "in flight", ["backend"], registry=registry).labels("a"))
    part.inc()
    part.inc()
    part.dec()
    assert registry.get_sample_value("in_flight", {"backend": "a"}) == 1.0
    part.dec()
    assert registry.get_sample_value("in_flight", {"backend": "a"}) == 0.0


def test_the_fleets_series_without_the_apps_tally_fold_when_their_registry_is_collected() -> None:
    registry = CollectorRegistry()
    series = BackendSeries.of(FleetMetrics(registry), "gpu-a")
    series.ok.inc()
    series.in_flight.inc()
    series.time_to_first_token.observe(0.2)
    read = registry.get_sample_value
    assert read("citadel_backend_requests_total", {"backend": "gpu-a", "outcome": "ok"}) == 1
    assert read("citadel_backend_in_flight", {"backend": "gpu-a"}) == 1
    assert read("citadel_backend_time_to_first_token_seconds_count", {"backend": "gpu-a"}) == 1


def test_a_series_tallied_twice_has_one_tally() -> None:
    """A stage built again (a reload) gets the tally it had: nothing pending is left behind or doubled."""
    metrics = Metrics()
    child = metrics.requests.labels("/r", "m", "200")
    first, second = metrics.tally.counter(child), metrics.tally.counter(child)
    assert first is second
    assert metrics.tally.gauge(metrics.active_streams) is metrics.tally.gauge(metrics.active_streams)


def _without_created(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if b"_created" not in line]
