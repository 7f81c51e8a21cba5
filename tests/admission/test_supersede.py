"""Latest wins on copilot (`supersede: true`): a new completion of the same key and X-Session-ID cancels
the one still running, whose upstream connection closes so Ollama stops generating."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from tests.admission.conftest import until_running
from tests.core.conftest import AUTH
from tests.fakes.ollama import Behavior, FakeOllama
from tests.fleet.conftest import fleet_gateway, write_fleet_config

COPILOT = "/v1/copilot/completions"
SLOW = Behavior(tokens=["tok"] * 400, token_delay_s=0.05)  # 20 s unless the gateway leaves


def completion(prompt: str) -> dict[str, object]:
    return {"model": "mixtral", "prompt": prompt, "stream": True}


async def test_a_newer_completion_of_the_session_closes_the_older_upstream(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    gpu_b = fakes["gpu-b"]
    gpu_b.behavior = SLOW
    async with (
        fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw,
        aiohttp.ClientSession(headers={**AUTH, "X-Session-ID": "editor-1"}) as session,
    ):
        older = await session.post(gw.url + COPILOT, json=completion("def f("))
        assert older.status == 200
        assert await older.content.readany()
        first = gpu_b.streams[-1]
        sent = time.monotonic()
        newer = await session.post(gw.url + COPILOT, json=completion("def fo("))
        assert newer.status == 200
        async with asyncio.timeout(5):
            await first.disconnect_event.wait()
            rest = await older.read()
        assert first.disconnected_at is not None
        assert first.disconnected_at - sent < 1.0  # Ollama is told at once (the bound is 100 ms)
        assert b"superseded" in rest
        assert not gpu_b.streams[-1].disconnected  # the newer one runs on
        newer.close()
        older.close()


async def test_another_session_is_not_superseded(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    gpu_b = fakes["gpu-b"]
    gpu_b.behavior = SLOW
    async with (
        fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw,
        aiohttp.ClientSession(headers=AUTH) as session,
    ):
        one = await session.post(gw.url + COPILOT, json=completion("a"), headers={"X-Session-ID": "one"})
        assert await one.content.readany()
        two = await session.post(gw.url + COPILOT, json=completion("b"), headers={"X-Session-ID": "two"})
        assert await two.content.readany()
        assert not any(s.disconnected for s in gpu_b.streams)
        one.close()
        two.close()


async def test_a_superseded_whole_answer_is_a_409(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    gpu_b = fakes["gpu-b"]
    gpu_b.behavior = SLOW
    body = {"model": "mixtral", "prompt": "x", "stream": False}
    async with (
        fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw,
        aiohttp.ClientSession(headers={**AUTH, "X-Session-ID": "editor-2"}) as session,
    ):
        older = asyncio.create_task(session.post(gw.url + COPILOT, json=body))
        await until_running(gpu_b)
        newer = await session.post(gw.url + COPILOT, json=completion("y"))
        response = await older
        assert response.status == 409
        assert (await response.json())["error"]["code"] == "superseded"
        assert gpu_b.streams[0].disconnected
        newer.close()
