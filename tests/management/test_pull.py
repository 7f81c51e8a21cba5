"""`POST /management/models/pull`: progress streamed as NDJSON; the app owns the pull, not the request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.core.conftest import AUTH, Gateway, running_gateway
from tests.fakes.ollama import FakeOllama, PullRecord
from tests.management.conftest import write_management_config

PULL = "/management/models/pull"


async def lines(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    async for raw in response.content:
        if raw.strip():
            yield json.loads(raw)


async def pull_all(session: aiohttp.ClientSession, model: str) -> list[dict[str, Any]]:
    async with session.post(PULL, json={"model": model}) as response:
        assert response.status == 200
        return [line async for line in lines(response)]


async def eventually(check: Callable[[], bool], within_s: float = 2.0) -> None:
    for _ in range(int(within_s / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def wait_done(record: PullRecord) -> None:
    await asyncio.wait_for(record.done.wait(), 5)


async def test_progress_is_streamed_as_it_happens(gateway: Gateway, fake: FakeOllama) -> None:
    events = []
    async with (
        aiohttp.ClientSession(gateway.url, headers=AUTH) as session,
        session.post(PULL, json={"model": "tinyllama"}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        async for event in lines(response):
            if not events:
                # The first line reached us while Ollama was still pulling.
                assert not fake.pulls[-1].done.is_set()
            events.append(event)
    assert events[0]["status"] == "pulling manifest"
    assert events[-1] == {"model": "tinyllama", "status": "success"}
    percents = [e["percent"] for e in events if "percent" in e]
    assert percents == [0.0, 33.3, 66.7, 100.0]
    layer = events[1]
    assert layer["digest"].startswith("sha256:") and layer["total"] > 0
    assert fake.pulls[-1].completed
    async with (
        aiohttp.ClientSession(gateway.url, headers=AUTH) as session,
        session.get("/management/models/list") as response,
    ):
        names = [m["name"] for m in (await response.json())["models"]]
    assert "tinyllama:latest" in names


async def test_in_stream_error_is_forwarded(gateway: Gateway, fake: FakeOllama) -> None:
    async with aiohttp.ClientSession(gateway.url, headers=AUTH) as session:
        events = await pull_all(session, "no-such-model")
    assert events[0]["status"] == "pulling manifest"
    last = events[-1]
    assert last["status"] == "error"
    assert last["error"]["code"] == "model_not_found"
    assert "no-such-model" in last["error"]["message"]
    assert "file does not exist" in last["error"]["message"]


async def test_pull_goes_on_after_the_client_leaves(gateway: Gateway, fake: FakeOllama) -> None:
    async with aiohttp.ClientSession(gateway.url, headers=AUTH) as session:
        response = await session.post(PULL, json={"model": "llama3.2"})
        first = await response.content.readline()
        assert json.loads(first)["status"] == "pulling manifest"
        response.close()  # drop the connection mid-pull
    record = fake.pulls[-1]
    assert not record.done.is_set()
    await wait_done(record)
    # The gateway kept reading Ollama's stream to the end: its own request was never dropped.
    assert record.completed and not record.client_disconnected
    assert "llama3.2:latest" in fake.models


async def test_a_second_request_joins_the_running_pull(gateway: Gateway, fake: FakeOllama) -> None:
    async with aiohttp.ClientSession(gateway.url, headers=AUTH) as session:
        first = asyncio.create_task(pull_all(session, "all-minilm"))
        await eventually(lambda: bool(fake.pulls))
        second = await pull_all(session, "all-minilm:latest")
        events = await first
    assert len(fake.pulls) == 1
    assert events[-1]["status"] == second[-1]["status"] == "success"
    # The late reader starts from where the pull stands, not from an empty screen.
    assert second[0]["status"] == "pulling manifest"


async def test_pull_with_ollama_down_is_502(gateway: Gateway, fake: FakeOllama) -> None:
    await fake.close()
    async with (
        aiohttp.ClientSession(gateway.url, headers=AUTH) as session,
        session.post(PULL, json={"model": "tinyllama"}) as response,
    ):
        assert response.status == 502
        assert response.headers["Content-Type"] == "application/json"
        assert (await response.json())["error"]["code"] == "upstream_unavailable"


async def test_shutdown_cancels_running_pulls(tmp_path: Path) -> None:
    async with FakeOllama(pull_step_delay_s=1.0) as fake:
        async with (
            running_gateway(write_management_config(tmp_path, fake.port), fake) as gw,
            aiohttp.ClientSession(gw.url, headers=AUTH) as session,
        ):
            response = await session.post(PULL, json={"model": "tinyllama"})
            await response.content.readline()
            response.close()
        record = fake.pulls[-1]
        # The gateway stopped: its request to Ollama was closed, the pull did not finish through it.
        await eventually(lambda: record.client_disconnected)
        assert not record.completed
