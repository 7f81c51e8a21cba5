"""The Models page's data: keep warm and unload through keep_alive, delete, pull progress on the session."""

from __future__ import annotations

import json

import aiohttp

from tests.console.conftest import signed_in
from tests.core.conftest import Gateway


async def running(session: aiohttp.ClientSession) -> set[str]:
    async with session.get("/console/api/models/running") as response:
        assert response.status == 200
        return {m["name"] for m in (await response.json())["models"]}


async def test_keep_warm_unload_delete_and_pull(gateway: Gateway) -> None:
    async with signed_in(gateway) as (session, token):
        csrf = {"X-CSRF-Token": token}
        keep = {"model": "qwen3:latest", "keep_alive": "30m"}
        async with session.post("/console/api/models/keep", json=keep, headers=csrf) as response:
            assert response.status == 200
        assert "qwen3:latest" in await running(session)
        unload = {"model": "qwen3:latest", "keep_alive": 0}
        async with session.post("/console/api/models/keep", json=unload, headers=csrf) as response:
            assert response.status == 200
        assert "qwen3:latest" not in await running(session)

        async with session.post(
            "/console/api/models/delete", json={"model": "qwen3"}, headers=csrf
        ) as response:
            assert response.status == 200
        async with session.get("/console/api/models") as response:
            assert "qwen3:latest" not in {m["name"] for m in (await response.json())["models"]}

        async with session.post(
            "/console/api/models/pull", json={"model": "all-minilm"}, headers=csrf
        ) as response:
            assert response.status == 200
            events = [json.loads(line) for line in (await response.text()).splitlines() if line]
        assert events[0]["status"] == "pulling manifest" and events[-1]["status"] == "success"
