"""What a caller without a key learns: nothing about the configured agent profiles."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.core.conftest import AUTH, CHAT, REPO, running_gateway, write_config
from tests.fakes.ollama import FakeOllama

PATHS = ["/v1/agents/stream?type=telepathy", "/v1/agents/stream", "/v1/telepathy/chat/completions"]


async def test_profile_names_are_listed_only_for_a_valid_key(tmp_path: Path) -> None:
    async with FakeOllama() as fake:
        config = write_config(tmp_path, fake.port, REPO / "pipelines")
        async with running_gateway(config, fake, server="uvicorn") as gw, aiohttp.ClientSession() as session:
            for path in PATHS:
                async with session.post(gw.url + path, json=CHAT) as anonymous:
                    assert anonymous.status == 401, path
                    assert "voice" not in await anonymous.text()
                async with session.post(gw.url + path, json=CHAT, headers=AUTH) as known:
                    assert known.status in (400, 404), path
                    assert "voice" in (await known.json())["error"]["message"]
