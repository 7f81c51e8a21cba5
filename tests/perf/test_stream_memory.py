"""Python heap per held-open stream, measured with tracemalloc: a guard against per-stream buffers or copies.

Counts only allocations made with a citadel_proxy frame on the stack (the gateway's own objects and what
it asks aiohttp, Starlette and asyncio for), so the in-process fake Ollama and test client do not count.
About 15 KiB per stream when written; the bound is generous so that only a real regression trips it (a
64 KiB buffer per stream, a copy of every token kept, the request body kept twice).
"""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.core.conftest import REPO, TEST_KEY, running_gateway, write_config
from tests.fakes.ollama import Behavior, FakeOllama

STREAMS = 40
BOUND_BYTES = 32 * 1024
_BODY = json.dumps(
    {"model": "phi3", "messages": [{"role": "user", "content": "hello " * 200}], "stream": True}
).encode()


@pytest.fixture
async def slow_fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        # Long enough that every stream is still open when measured; the fake stops when clients leave.
        server.behavior = Behavior.counted(600, token_delay_s=0.1)
        yield server


async def _open_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/voice/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TEST_KEY}\r\nContent-Length: {len(_BODY)}\r\n\r\n".encode()
        + _BODY
    )
    seen = b""
    while b"data: {" not in seen:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, f"the gateway closed the stream early: {seen[:300]!r}"
        seen += chunk
    return reader, writer


def _gateway_heap(snapshot: tracemalloc.Snapshot) -> int:
    ours = snapshot.filter_traces([tracemalloc.Filter(True, "*/citadel_proxy/*", all_frames=True)])
    return sum(stat.size for stat in ours.statistics("filename"))


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
async def test_heap_per_held_stream_is_bounded(slow_fake: FakeOllama, tmp_path: Path, server: str) -> None:
    config = write_config(tmp_path, slow_fake.port, REPO / "pipelines")
    async with running_gateway(config, slow_fake, server=server) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        tracemalloc.start(12)
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            # Warm up first uses (lazy imports, pools, caches) so they are not counted per stream.
            for _reader, writer in [await _open_stream(port) for _ in range(5)]:
                writer.close()
            await asyncio.sleep(0.3)
            gc.collect()
            idle = _gateway_heap(tracemalloc.take_snapshot())
            held = list(await asyncio.gather(*(_open_stream(port) for _ in range(STREAMS))))
            await asyncio.sleep(0.3)
            gc.collect()
            per_stream = (_gateway_heap(tracemalloc.take_snapshot()) - idle) / STREAMS
        finally:
            tracemalloc.stop()
            for _reader, writer in held:
                writer.close()
    print(f"{server}: {per_stream / 1024:.1f} KiB of gateway heap per held stream")
    assert per_stream < BOUND_BYTES, f"{per_stream / 1024:.1f} KiB of Python heap per held-open stream"
