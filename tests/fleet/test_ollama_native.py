"""Ollama's own API in front of a fleet: /api/tags and /api/ps speak for every backend."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.core.conftest import AUTH
from tests.fakes.ollama import FakeOllama
from tests.fleet.conftest import fleet_gateway, write_fleet_config


async def test_tags_and_ps_are_merged_across_backends(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    async with (
        fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw,
        aiohttp.ClientSession(headers=AUTH) as session,
    ):
        async with session.get(gw.url + "/api/tags") as response:
            assert response.status == 200
            tags = {m["name"] for m in (await response.json())["models"]}
        async with session.get(gw.url + "/api/ps") as response:
            loaded = {m["name"] for m in (await response.json())["models"]}
    # mixtral is only on gpu-b, qwen3 only loaded on gpu-c: the first backend alone knows neither.
    assert {"phi3:latest", "qwen3:latest", "mixtral:latest"} <= tags and "nowhere:latest" not in tags
    assert loaded == {"phi3:latest", "mixtral:latest", "qwen3:latest"}
