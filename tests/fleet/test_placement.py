"""Placement: a request goes where its model is, loaded first, within `models:`; conversations stick."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes.ollama import FakeOllama
from tests.fleet.conftest import backends_report, chat, fleet_gateway, post, write_fleet_config

BACKEND = "x-citadel-backend"


async def test_request_goes_where_the_model_is(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    async with fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw:
        status, headers, _ = await post(gw.url, chat("mixtral"))
        assert status == 200
        assert headers[BACKEND] == "gpu-b"
        assert fakes["gpu-b"].count("/api/chat") == 1
        assert fakes["gpu-a"].count("/api/chat") == fakes["gpu-c"].count("/api/chat") == 0


async def test_loaded_backend_is_preferred(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    async with fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw:
        for _ in range(3):
            status, headers, _ = await post(gw.url, chat("qwen3"))
            assert (status, headers[BACKEND]) == (200, "gpu-c")  # gpu-a has it too, not loaded
        status, headers, _ = await post(gw.url, chat("phi3"))
        assert (status, headers[BACKEND]) == (200, "gpu-a")


async def test_unknown_model_is_404_and_models_key_is_respected(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    config = write_fleet_config(tmp_path, fakes, per_backend={"gpu-c": {"models": ["phi3"]}})
    async with fleet_gateway(config, fakes) as gw:
        status, _, body = await post(gw.url, chat("nowhere"))
        assert status == 404
        assert b"model_not_found" in body
        # qwen3 is loaded on gpu-c, but gpu-c takes only phi3: it goes to gpu-a
        status, headers, _ = await post(gw.url, chat("qwen3"))
        assert (status, headers[BACKEND]) == (200, "gpu-a")
        assert fakes["gpu-c"].count("/api/chat") == 0


async def test_conversation_sticks_to_its_backend(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    async with fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw:
        # The conversation starts where phi3 is loaded (gpu-b)...
        fakes["gpu-a"].loaded.clear()
        fakes["gpu-b"].load("phi3:latest")
        await _inventory_settles(gw.url, "gpu-b", "phi3:latest")
        conversation = {"X-Conversation-ID": "conv-sticky-1"}
        status, headers, _ = await post(gw.url, chat("phi3"), conversation)
        assert (status, headers[BACKEND]) == (200, "gpu-b")
        # ...and stays there when phi3 is loaded only on gpu-a, where any other request now goes.
        fakes["gpu-b"].loaded.clear()
        fakes["gpu-a"].load("phi3:latest")
        await _inventory_settles(gw.url, "gpu-a", "phi3:latest")
        status, headers, _ = await post(gw.url, chat("phi3"))
        assert headers[BACKEND] == "gpu-a"
        for _ in range(3):
            status, headers, _ = await post(gw.url, chat("phi3"), conversation)
            assert (status, headers[BACKEND]) == (200, "gpu-b")


async def _inventory_settles(url: str, backend: str, model: str) -> None:
    """Wait until the gateway sees `model` loaded on `backend` only."""
    async with asyncio.timeout(10):
        while True:
            report = await backends_report(url)
            where = {b["name"] for b in report if model in {m["name"] for m in b["loaded"]}}
            if where == {backend}:
                return
            await asyncio.sleep(0.05)
