"""keep_warm loads its models where they are installed; backend_header false leaves the header out."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.ollama import FakeOllama
from tests.fleet.conftest import chat, eventually, fleet_gateway, post, write_fleet_config


async def test_keep_warm_loads_where_installed(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    config = write_fleet_config(tmp_path, fakes, top="")
    text = config.read_text().replace("  backends:", "  keep_warm: [qwen3]\n  backends:", 1)
    config.write_text(text)
    assert "qwen3:latest" not in fakes["gpu-a"].loaded

    async def warm() -> bool:
        return "qwen3:latest" in fakes["gpu-a"].loaded

    async with fleet_gateway(config, fakes):
        await eventually(warm)
    warmed = [r for r in fakes["gpu-a"].requests if r.path == "/api/generate"]
    assert warmed and warmed[0].json["keep_alive"] == -1
    assert not any(r.path == "/api/generate" for r in fakes["gpu-b"].requests)  # gpu-b has no qwen3


async def test_backend_header_can_be_turned_off(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    config = write_fleet_config(tmp_path, fakes, fleet={"backend_header": False})
    async with fleet_gateway(config, fakes) as gw:
        status, headers, _ = await post(gw.url, chat("mixtral"))
    assert status == 200 and "x-citadel-backend" not in headers
