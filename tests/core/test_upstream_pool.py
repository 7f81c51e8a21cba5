"""The upstream connection pool: a pooled connection that Ollama closed meanwhile."""

from __future__ import annotations

from pathlib import Path

from tests.core.conftest import CHAT, REPO, Gateway, free_port, running_gateway, stream_text, write_config
from tests.fakes.ollama import Behavior, FakeOllama


async def voice(gw: Gateway) -> str:
    status, text = await stream_text(gw, "/v1/voice/chat/completions", CHAT)
    assert status == 200
    return text


async def test_a_restarted_ollama_does_not_fail_the_next_stream(tmp_path: Path) -> None:
    port = free_port()
    first = FakeOllama(port=port, behavior=Behavior.counted(3))
    await first.start()
    config = write_config(tmp_path, port, REPO / "pipelines")
    async with running_gateway(config, first) as gw:
        assert (await voice(gw)).endswith("data: [DONE]\n\n")
        assert (await voice(gw)).endswith("data: [DONE]\n\n")
        await first.close()  # the pooled keep-alive connection dies with it
        second = FakeOllama(port=port, behavior=Behavior.counted(3))
        await second.start()
        try:
            assert (await voice(gw)).endswith("data: [DONE]\n\n")
        finally:
            await second.close()
