"""Large requests hand their memory back (issue 12: 4). The figures are `make bench`'s (bench/bodies.py);
here, that the malloc tuning they rest on takes effect in this process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

from citadel_proxy import memory
from tests.core.conftest import AUTH, CHAT
from tests.fakes.ollama import FakeOllama
from tests.hostile.limits_helpers import gateway_on

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


@glibc
def test_the_mmap_threshold_is_fixed() -> None:
    assert memory.return_large_blocks()


@glibc
async def test_a_burst_of_large_requests_is_trimmed_once() -> None:
    trims = memory._TRIM
    memory.trim_soon()
    first = trims._handle
    memory.trim_soon()
    assert first is not None and first.cancelled() and trims._handle is not None
    trims._handle.cancel()
    trims._run(lambda _pad: 1)
    assert trims._handle is None
    await asyncio.sleep(0)


async def test_a_large_body_schedules_a_trim_once_answered(tmp_path: Path) -> None:
    trims = memory._TRIM
    if trims._handle is not None:
        trims._handle.cancel()
        trims._handle = None
    async with FakeOllama() as fake, gateway_on(tmp_path, fake, "uvicorn") as gw:
        small = {**CHAT, "stream": False}
        async with aiohttp.ClientSession(headers=AUTH) as session:
            async with session.post(gw.url + "/v1/plain", json=small) as response:
                assert response.status == 200
            assert trims._handle is None
            large = {**small, "messages": [{"role": "user", "content": "x" * 2_000_000}]}
            async with session.post(gw.url + "/v1/plain", json=large) as response:
                assert response.status == 200
        for _ in range(100):  # the server's frame may finish just after the client has the answer
            if trims._handle is not None:
                break
            await asyncio.sleep(0.01)
        assert trims._handle is not None
        trims._handle.cancel()
        trims._handle = None
