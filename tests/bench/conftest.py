"""What the bench's tests share: the bench's own fake Ollama on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench.fake_ollama import Answers, Connection, Settings


@pytest.fixture
async def fake_port() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(Answers(), Settings(tokens=8)), "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
