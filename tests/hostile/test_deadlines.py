"""Deadlines hold whatever the client does: one that never reads; an Ollama that hangs (issue 12: 3, 8)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.core.conftest import AUTH, CHAT
from tests.fakes.ollama import Behavior, FakeOllama
from tests.hostile.limits_helpers import gateway_on, post_without_reading, read_to_end

# About 40 MB if nothing held it back: far more than the socket buffers on the way hold.
_FLOOD = Behavior(tokens=["x" * 4000] * 10_000, tokens_per_write=20)


@pytest.fixture(params=["uvicorn", "hypercorn"])
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_the_deadline_closes_ollama_while_the_client_does_not_read(tmp_path: Path, server: str) -> None:
    async with FakeOllama() as fake, gateway_on(tmp_path, fake, server) as gw:
        fake.next(_FLOOD)
        sock = await post_without_reading(gw, "/v1/short", CHAT)  # a 1 s deadline
        record = (await fake.wait_streams(1))[-1]
        # Before: Ollama's connection stayed open until the client read (40 s, 70 s...).
        await asyncio.wait_for(record.disconnect_event.wait(), timeout=5.0)
        assert record.lines_written < 10_000
        data, ended = await read_to_end(sock, timeout_s=10.0)
        assert ended and b"data: [DONE]" not in data


async def test_a_send_blocked_past_the_write_timeout_closes_both_connections(
    tmp_path: Path, server: str
) -> None:
    slow = "  write_timeout_s: 0.5"
    async with FakeOllama() as fake, gateway_on(tmp_path, fake, server, gateway=slow) as gw:
        fake.next(_FLOOD)
        sock = await post_without_reading(gw, "/v1/long", CHAT)  # its deadline is 10 minutes away
        record = (await fake.wait_streams(1))[-1]
        await asyncio.wait_for(record.disconnect_event.wait(), timeout=5.0)
        data, ended = await read_to_end(sock, timeout_s=10.0)
        assert ended and b"data: [DONE]" not in data
        # The gateway serves on.
        async with aiohttp.ClientSession(headers=AUTH) as session:
            response = await session.post(gw.url + "/v1/long", json=CHAT)
            assert response.status == 200 and (await response.read()).endswith(b"data: [DONE]\n\n")


async def test_a_hung_whole_answer_is_504_upstream_timeout(tmp_path: Path, server: str) -> None:
    async with FakeOllama() as fake, gateway_on(tmp_path, fake, server, ollama="timeout: 0.3") as gw:
        fake.next(Behavior.counted(2, first_token_delay_s=3))
        async with aiohttp.ClientSession(headers=AUTH) as session:
            response = await session.post(gw.url + "/v1/plain", json=CHAT)
            error = (await response.json())["error"]
        # The README: 504 for timeouts (before: 502).
        assert (response.status, error["code"]) == (504, "upstream_timeout")
        fake.next(Behavior.counted(2, first_token_delay_s=3))
        async with aiohttp.ClientSession(headers=AUTH) as session:
            response = await session.post(gw.url + "/v1/short", json=CHAT)
            text = (await response.read()).decode()
        [event] = [e for e in text.split("\n\n") if e.startswith("data: ")]
        assert json.loads(event[len("data: ") :])["error"]["code"] == "upstream_timeout"
