"""The upstream connection pool: keep-alive reuse, and a pooled connection Ollama closed meanwhile."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.core.conftest import AUTH, REPO, free_port, running_gateway, write_config
from tests.fakes.ollama import Behavior, FakeOllama

CHAT = {"model": "phi3", "messages": [{"role": "user", "content": "hi"}]}


async def voice(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(url + "/v1/voice/chat/completions", json=CHAT) as response:
        assert response.status == 200
        return (await response.read()).decode()


async def test_a_restarted_ollama_does_not_fail_the_next_stream(tmp_path: Path) -> None:
    port = free_port()
    first = FakeOllama(port=port, behavior=Behavior.counted(3))
    await first.start()
    config = write_config(tmp_path, port, REPO / "pipelines")
    async with running_gateway(config, first) as gw, aiohttp.ClientSession(headers=AUTH) as session:
        assert (await voice(session, gw.url)).endswith("data: [DONE]\n\n")
        assert (await voice(session, gw.url)).endswith("data: [DONE]\n\n")
        await first.close()  # the pooled keep-alive connection dies with it
        second = FakeOllama(port=port, behavior=Behavior.counted(3))
        await second.start()
        try:
            assert (await voice(session, gw.url)).endswith("data: [DONE]\n\n")
        finally:
            await second.close()
