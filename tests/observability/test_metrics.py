"""The Metrics series and their exposition, in one process and across worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from citadel_proxy.observability.metrics import (
    MULTIPROC_ENV,
    Metrics,
    MetricsSetupError,
    mark_process_dead,
    prepare_multiprocess_dir,
)
from citadel_proxy.routes.metrics import metrics_endpoint

ROUTE = "/v1/chat/completions"


def promtool_check(promtool: str, exposition: bytes) -> None:
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False
    )
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, problems


def fill(metrics: Metrics) -> None:
    metrics.requests.labels(ROUTE, "llama3:8b", "200").inc()
    metrics.request_duration.labels(ROUTE).observe(1.5)
    metrics.time_to_first_token.labels(ROUTE).observe(0.2)
    metrics.tokens_per_second.labels(ROUTE).observe(42.0)
    metrics.prompt_tokens.labels(ROUTE, "llama3:8b").inc(12)
    metrics.completion_tokens.labels(ROUTE, "llama3:8b").inc(30)
    metrics.active_streams.inc()
    metrics.upstream_errors.labels("upstream_unavailable").inc()
    metrics.rate_limited.labels(ROUTE).inc()
    metrics.set_upstream_up(True)


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition.decode())
        for s in family.samples
    }


def test_exposition_passes_promtool(promtool: str) -> None:
    metrics = Metrics()
    fill(metrics)
    exposition = metrics.exposition()
    promtool_check(promtool, exposition)
    for name in (
        "citadel_requests_total",
        "citadel_request_duration_seconds_bucket",
        "citadel_time_to_first_token_seconds_count",
        "citadel_tokens_per_second_sum",
        "citadel_prompt_tokens_total",
        "citadel_completion_tokens_total",
        "citadel_active_streams",
        "citadel_upstream_errors_total",
        "citadel_rate_limited_total",
        "citadel_upstream_up",
    ):
        assert name.encode() in exposition


def test_other_packages_add_series_on_the_registry(promtool: str) -> None:
    from prometheus_client import Counter

    metrics = Metrics()
    hits = Counter(
        "citadel_cache_hits_total", "Cache lookups that hit.", ["route"], registry=metrics.registry
    )
    hits.labels(ROUTE).inc()
    exposition = metrics.exposition()
    assert samples(exposition)[("citadel_cache_hits_total", (("route", ROUTE),))] == 1.0
    promtool_check(promtool, exposition)


def test_two_apps_in_one_process_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    first.requests.labels(ROUTE, "m", "200").inc()
    assert (
        second.registry.get_sample_value(
            "citadel_requests_total", {"route": ROUTE, "model": "m", "status": "200"}
        )
        is None
    )


async def test_endpoint_serves_text_format() -> None:
    metrics = Metrics()
    fill(metrics)
    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [], "state": {}}
    scope["state"]["services"] = SimpleNamespace(metrics=metrics)
    response = await metrics_endpoint(Request(scope))
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"citadel_requests_total" in response.body


def test_multiprocess_dir_set_too_late_is_refused(tmp_path: Path) -> None:
    # This process imported prometheus_client without the variable: values would never reach the files.
    with pytest.raises(MetricsSetupError):
        Metrics(multiprocess_dir=str(tmp_path))


def test_prepare_multiprocess_dir_creates_and_cleans(tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    prepare_multiprocess_dir(folder)
    (folder / "counter_123.db").write_bytes(b"stale")
    (folder / "keep.txt").write_text("not ours")
    prepare_multiprocess_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


WRITER = textwrap.dedent(
    """
    import sys
    from citadel_proxy.observability.metrics import Metrics
    metrics = Metrics(multiprocess_dir=sys.argv[1])
    metrics.requests.labels("/v1/chat/completions", "llama3:8b", "200").inc(int(sys.argv[2]) - 1)
    # As the metrics stage counts: tallied, then folded into the worker's file.
    metrics.tally.counter(metrics.requests.labels("/v1/chat/completions", "llama3:8b", "200")).inc()
    metrics.tally.fold()
    metrics.completion_tokens.labels("/v1/chat/completions", "llama3:8b").inc(10)
    metrics.request_duration.labels("/v1/chat/completions").observe(0.3)
    metrics.active_streams.inc()
    metrics.set_upstream_up(True)
    print("ready", flush=True)
    sys.stdin.readline()
    metrics.close()
    """
)

READER = textwrap.dedent(
    """
    import asyncio, sys
    from types import SimpleNamespace
    from starlette.requests import Request
    from citadel_proxy.observability.metrics import Metrics
    from citadel_proxy.routes.metrics import metrics_endpoint
    metrics = Metrics(multiprocess_dir=sys.argv[1])
    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [],
             "state": {"services": SimpleNamespace(metrics=metrics)}}
    response = asyncio.run(metrics_endpoint(Request(scope)))
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
    sys.stdout.buffer.write(response.body)
    """
)


def _env(folder: Path) -> dict[str, str]:
    return {**os.environ, MULTIPROC_ENV: str(folder)}


def _read(folder: Path) -> bytes:
    result = subprocess.run(
        [sys.executable, "-c", READER, str(folder)],
        env=_env(folder),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_multiprocess_sums_workers(tmp_path: Path, promtool: str) -> None:
    folder = tmp_path / "prom"
    prepare_multiprocess_dir(folder)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(count)],
            env=_env(folder),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for count in (3, 4)
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline() == b"ready\n"
        both = samples(_read(folder))
        requests = ("citadel_requests_total", (("model", "llama3:8b"), ("route", ROUTE), ("status", "200")))
        assert both[requests] == 7.0
        assert both[("citadel_completion_tokens_total", (("model", "llama3:8b"), ("route", ROUTE)))] == 20.0
        assert both[("citadel_request_duration_seconds_count", (("route", ROUTE),))] == 2.0
        assert both[("citadel_active_streams", ())] == 2.0
        assert both[("citadel_upstream_up", ())] == 1.0
        # The first worker leaves cleanly: its stream no longer counts, its requests still do.
        writers[0].communicate(b"\n", timeout=60)
        assert writers[0].returncode == 0
        one_left = _read(folder)
        promtool_check(promtool, one_left)
        assert samples(one_left)[requests] == 7.0
        assert samples(one_left)[("citadel_active_streams", ())] == 1.0
        # A worker that died without saying so is marked dead by whoever saw it go.
        mark_process_dead(writers[1].pid, folder)
        assert samples(_read(folder))[("citadel_active_streams", ())] == 0.0
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.communicate(b"\n", timeout=60)


def test_a_worker_file_not_yet_sized_is_left_out_of_the_scrape(tmp_path: Path) -> None:
    """prometheus-client creates a worker's file and sizes it afterwards: a scrape in between (a worker
    starting) reads an empty file, which made the library's collector fail the whole scrape."""
    folder = tmp_path / "prom"
    prepare_multiprocess_dir(folder)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), "3"],
        env=_env(folder),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n"
        (folder / "counter_99999.db").touch()  # a starting worker's file, created and not yet sized
        requests = ("citadel_requests_total", (("model", "llama3:8b"), ("route", ROUTE), ("status", "200")))
        assert samples(_read(folder))[requests] == 3.0
    finally:
        writer.communicate(b"\n", timeout=60)
