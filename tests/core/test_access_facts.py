"""The access line says what was known: the key of a refused request, the tokens of a cancelled stream,
and one word for a client that left."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from citadel_proxy.observability.logs import ACCESS_LOGGER
from tests.core.conftest import AUTH, CHAT, Gateway
from tests.fakes.ollama import Behavior

pytestmark = pytest.mark.usefixtures("caplog")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]


async def test_refused_request_names_the_key_and_model_it_carried(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        body = {**CHAT, "model": "no-such-model"}
        async with session.post(gateway.url + "/v1/chat/completions", json=body) as response:
            assert response.status == 404
    [line] = [x for x in access_lines(caplog) if x["status"] == 404]
    assert line["key"] == "tester" and line["model"] == "no-such-model"
    assert line["error_code"] == "model_not_found"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0


async def test_cancelled_stream_logs_the_tokens_that_went_out(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.fake.next(Behavior.counted(200, token_delay_s=0.02))
    async with aiohttp.ClientSession(headers=AUTH) as session:
        response = await session.post(gateway.url + "/v1/voice/chat/completions", json=CHAT)
        received = 0
        while received < 5:
            event = await response.content.readuntil(b"\n\n")
            received += event.startswith(b"data: {") and b'"content"' in event
        response.close()
    for _ in range(200):
        lines = [x for x in access_lines(caplog) if x["route"] == "/v1/voice/chat/completions"]
        if lines:
            break
        await asyncio.sleep(0.02)
    [line] = lines
    assert line["status"] == 499 and line["error_code"] == "client_closed"
    assert isinstance(line["completion_tokens"], int) and line["completion_tokens"] >= 5
