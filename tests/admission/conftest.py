"""One slow backend (mixtral on gpu-b, max_concurrent 1, each request held 200 ms) behind the gateway."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.core.conftest import AUTH, Gateway
from tests.fakes.ollama import Behavior, FakeOllama
from tests.fleet.conftest import eventually, fakes, fleet_gateway, write_fleet_config

__all__ = ["fakes"]  # the fleet's three fake Ollama servers, as a fixture here too

HOLD = Behavior(first_token_delay_s=0.2)
VOICE = "/v1/voice/chat/completions"
GUI = "/v1/gui/chat/completions"
CHAT = "/v1/chat/completions"


@contextlib.asynccontextmanager
async def one_slot(
    tmp_path: Path, fakes: dict[str, FakeOllama], fleet: dict[str, Any] | None = None
) -> AsyncIterator[Gateway]:
    fakes["gpu-b"].behavior = HOLD
    config = write_fleet_config(tmp_path, fakes, per_backend={"gpu-b": {"max_concurrent": 1}}, fleet=fleet)
    async with fleet_gateway(config, fakes) as gw:
        yield gw


async def ask(url: str, path: str, tag: str) -> tuple[int, dict[str, str], bytes, float]:
    """A non-streamed mixtral chat whose message is `tag`; its status, headers, body and duration."""
    body = {"model": "mixtral", "messages": [{"role": "user", "content": tag}], "stream": False}
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(url + path, json=body) as response,
    ):
        data = await response.read()
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, headers, data, time.perf_counter() - started


def started_order(fake: FakeOllama) -> list[str]:
    """The tags of the chats the fake received, in the order they reached it."""
    out = []
    for request in fake.requests:
        if request.path == "/api/chat":
            out.append(request.json["messages"][-1]["content"])
    return out


async def waiting(url: str) -> dict[str, int]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(url + "/management/backends") as response,
    ):
        return {q["pipeline"]: q["waiting"] for q in (await response.json())["queues"]}


async def until_waiting(url: str, pipeline: str, n: int) -> None:
    async def enough() -> bool:
        return (await waiting(url)).get(pipeline, 0) >= n

    await eventually(enough)


async def until_running(fake: FakeOllama) -> None:
    async def busy() -> bool:
        return fake.running >= 1

    await eventually(busy)
