"""The Overview's figures from the Prometheus exposition: rates and TTFT quantiles over the window."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from citadel_proxy.console.overview import quantile, read_counters, summarise
from citadel_proxy.observability.metrics import Metrics
from tests.console.conftest import browser, sign_in
from tests.core.conftest import Gateway


def test_quantiles_follow_prometheus_interpolation() -> None:
    buckets = {0.1: 10.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == 0.1 + 0.4 * (50 - 10) / 80
    assert quantile(buckets, 0.95) == 0.5 + 0.5 * 5 / 10
    assert quantile({float("inf"): 0.0}, 0.5) is None


def test_the_window_counts_only_what_happened_in_it() -> None:
    metrics = Metrics(registry=CollectorRegistry())
    metrics.time_to_first_token.labels("/v1/voice/chat/completions").observe(5.0)
    metrics.requests.labels("/v1/voice/chat/completions", "phi3", "200").inc()
    before = read_counters(generate_latest(metrics.registry), now=100.0)
    for _ in range(4):
        metrics.time_to_first_token.labels("/v1/voice/chat/completions").observe(0.02)
        metrics.requests.labels("/v1/voice/chat/completions", "phi3", "200").inc()
    metrics.requests.labels("/v1/voice/chat/completions", "phi3", "502").inc()
    metrics.upstream_errors.labels("timeout").inc()
    after = read_counters(generate_latest(metrics.registry), now=102.0)
    rate, latencies, errors = summarise(before, after)
    assert rate == 5 / 2
    [voice] = latencies
    # The slow answer before the window is not in its p95.
    assert voice.count == 4 and voice.p95_s is not None and voice.p95_s < 0.05
    assert {(e.kind, e.count) for e in errors} == {("HTTP 502", 1), ("upstream timeout", 1)}


async def test_the_live_snapshot_carries_backends_and_queues(gateway: Gateway) -> None:
    async with browser(gateway) as session:
        assert (await sign_in(session)).status == 303
        async with session.get("/console/api/overview") as response:
            assert response.status == 200
            while True:
                line = await response.content.readline()
                if line.startswith(b"data: "):
                    break
    snapshot = json.loads(line[len(b"data: ") :])
    assert [b["name"] for b in snapshot["backends"]] == ["default"]
    assert snapshot["queues"] == []  # nothing waits: the one-server form has no slot limit
