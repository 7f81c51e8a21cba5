"""`citadel_upstream_up` follows Ollama without anyone calling /health, and each change is logged once.

Ollama is made to vanish and come back by stopping a fake and starting a new one on the same port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.core.conftest import AUTH, CHAT, REPO, free_port, running_gateway, write_config
from tests.fakes.ollama import FakeOllama

WATCH_LOGGER = "citadel_proxy.health.watch"
# Generous: the gateway and the fake share a loaded 2-core machine with other tests.
DEADLINE_S = 20.0


def upstream_up(exposition: str) -> float:
    [value] = [
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "citadel_upstream_up"
    ]
    return value


async def eventually(check: Callable[[], object], what: str) -> None:
    for _ in range(int(DEADLINE_S / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} after {DEADLINE_S} s")


async def gauge_becomes(client: httpx.AsyncClient, wanted: float) -> None:
    for _ in range(int(DEADLINE_S / 0.05)):
        if upstream_up((await client.get("/metrics")).text) == wanted:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"citadel_upstream_up is not {wanted} after {DEADLINE_S} s")


def watch_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WATCH_LOGGER and r.levelno == level]


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
async def test_the_background_check_follows_ollama_and_logs_each_change_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, server: str
) -> None:
    port = free_port()
    config = write_config(
        tmp_path, port, REPO / "pipelines", extra="monitoring: {health_checks: {interval: 0.1}}"
    )
    caplog.set_level(logging.INFO, logger=WATCH_LOGGER)
    async with (
        running_gateway(config, FakeOllama(port=port), server=server) as gw,
        httpx.AsyncClient(base_url=gw.url, headers=AUTH) as client,
    ):
        # Started with Ollama unreachable: said once, at start.
        await eventually(lambda: watch_lines(caplog, logging.WARNING), "no warning at start")
        [started] = watch_lines(caplog, logging.WARNING)
        assert "unreachable at start" in started and f"127.0.0.1:{port}" in started
        async with FakeOllama(port=port) as fake:
            await gauge_becomes(client, 1.0)
            # Several checks later, still one line for the one change.
            await eventually(lambda: fake.count("/api/version") >= 5, "the checks stopped")
            [back] = watch_lines(caplog, logging.INFO)
            assert "answers again" in back
        await gauge_becomes(client, 0.0)
        await eventually(lambda: len(watch_lines(caplog, logging.WARNING)) == 2, "no warning when it went")
        assert "unreachable now" in watch_lines(caplog, logging.WARNING)[1]
        assert not [r for r in caplog.records if r.name == WATCH_LOGGER and r.levelno >= logging.ERROR]


async def test_traffic_alone_moves_the_gauge(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    config = write_config(
        tmp_path, port, REPO / "pipelines", extra="monitoring: {health_checks: {enabled: false}}"
    )
    caplog.set_level(logging.INFO, logger=WATCH_LOGGER)
    async with (
        running_gateway(config, FakeOllama(port=port)) as gw,
        httpx.AsyncClient(base_url=gw.url, headers=AUTH) as client,
    ):
        async with FakeOllama(port=port) as fake:
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert upstream_up((await client.get("/metrics")).text) == 1.0
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 502
        assert upstream_up((await client.get("/metrics")).text) == 0.0
        async with FakeOllama(port=port) as again:
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert upstream_up((await client.get("/metrics")).text) == 1.0
    assert fake.count("/api/version") == again.count("/api/version") == 0  # disabled: no background check
    assert len(watch_lines(caplog, logging.WARNING)) == 1
    assert len(watch_lines(caplog, logging.INFO)) == 1
