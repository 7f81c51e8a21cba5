"""A request the queue would not start within its pipeline's max_queue_ms is refused at once with
Retry-After, in its protocol's error shape, rather than left to time out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.admission.conftest import CHAT, VOICE, ask, one_slot, until_running
from tests.fakes.ollama import FakeOllama


async def test_a_request_that_cannot_start_in_time_is_refused_at_once(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    gpu_b = fakes["gpu-b"]
    async with one_slot(tmp_path, fakes) as gw:
        for i in range(2):  # the gateway learns that a mixtral request holds its slot ~200 ms
            assert (await ask(gw.url, VOICE, f"warm-{i}"))[0] == 200
        first = asyncio.create_task(ask(gw.url, VOICE, "first"))
        await until_running(gpu_b)
        # voice waits at most 1 s: with ~200 ms each, the sixth in the queue cannot start in time.
        results = await asyncio.gather(*(ask(gw.url, VOICE, f"voice-{i}") for i in range(10)))
        await first
    refused = [r for r in results if r[0] != 200]
    assert refused, [r[0] for r in results]
    quick = [r for r in refused if r[3] < 0.5]  # not after a 1 s wait
    assert quick
    for status, headers, body, _ in quick:
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert json.loads(body)["error"]["code"] == "backends_busy"  # OpenAI's error shape
    assert gpu_b.most_running == 1


async def test_nothing_waits_where_the_pipeline_sets_no_queue(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    """ollama-chat sets no max_queue_ms (0): today's immediate 503, in Ollama's error shape."""
    gpu_b = fakes["gpu-b"]
    async with one_slot(tmp_path, fakes) as gw:
        first = asyncio.create_task(ask(gw.url, CHAT, "first"))
        await until_running(gpu_b)
        status, headers, body, _ = await ask(gw.url, "/api/chat", "native")
        await first
    assert status == 503 and headers["retry-after"] == "2"
    assert "error" in json.loads(body)
