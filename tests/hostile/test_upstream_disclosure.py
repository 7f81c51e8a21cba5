"""A client whose request cannot reach Ollama learns that, not where Ollama lives."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.core.conftest import AUTH, CHAT, REPO, free_port, running_gateway, write_config
from tests.fakes.ollama import FakeOllama


async def test_an_unreachable_ollama_is_not_located_for_the_client(tmp_path: Path) -> None:
    async with FakeOllama() as fake:
        dead = free_port()  # nothing listens there
        config = write_config(tmp_path, dead, REPO / "pipelines")
        async with running_gateway(config, fake, server="uvicorn") as gw, aiohttp.ClientSession() as session:
            async with session.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH) as response:
                assert response.status == 502
                text = await response.text()
            assert str(dead) not in text and "127.0.0.1" not in text
            assert (await response.json())["error"]["code"] == "upstream_unavailable"
            async with session.get(gw.url + "/management/system/ollama-status", headers=AUTH) as status:
                assert str(dead) in (await status.json())["error"]  # an admin still sees where and why
