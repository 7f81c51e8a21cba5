"""A backend never runs more than its max_concurrent: in one worker, across two workers, and across two
gateway instances sharing Redis; a request that cannot start anywhere is a 503 with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.core.conftest import AUTH, running_gateway
from tests.core.test_reload import start_serve, until_answering
from tests.fakes.ollama import Behavior, FakeOllama
from tests.fleet.conftest import (
    CHAT_PATH,
    answers,
    backends_report,
    chat,
    eventually,
    fleet_gateway,
    inventory_read,
    post,
    write_fleet_config,
)

SLOW = Behavior(tokens=["tok"] * 400, token_delay_s=0.05)  # 20 s unless the client leaves


@contextlib.asynccontextmanager
async def held_streams(url: str, n: int) -> AsyncIterator[None]:
    """`n` mixtral streams that have started (a first chunk read), closed on exit."""
    async with aiohttp.ClientSession(headers=AUTH) as session:
        responses = []
        try:
            for _ in range(n):
                response = await session.post(url + CHAT_PATH, json=chat("mixtral", stream=True))
                assert response.status == 200
                responses.append(response)
                assert await response.content.readany()
            yield
        finally:
            for response in responses:
                response.close()


async def test_full_backend_refuses_with_retry_after(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    gpu_b = fakes["gpu-b"]  # the only one with mixtral
    gpu_b.behavior = SLOW
    config = write_fleet_config(tmp_path, fakes, per_backend={"gpu-b": {"max_concurrent": 2}})
    async with fleet_gateway(config, fakes) as gw:
        async with held_streams(gw.url, 2):
            refused = await asyncio.gather(*(post(gw.url, chat("mixtral")) for _ in range(4)))
            assert gpu_b.most_running == 2
        for status, headers, body in refused:
            assert status == 503 and headers["retry-after"] == "2"
            assert b"backends_busy" in body
        gpu_b.behavior = Behavior()
        await eventually(lambda: answers(gw.url, "mixtral"))  # the closed streams gave their slots back
    assert gpu_b.most_running == 2


async def test_two_workers_share_max_concurrent(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    gpu_b = fakes["gpu-b"]
    gpu_b.behavior = Behavior(tokens=["tok"] * 20, token_delay_s=0.05)
    config = write_fleet_config(tmp_path, fakes, per_backend={"gpu-b": {"max_concurrent": 2}})
    log = (tmp_path / "gateway.log").open("wb")
    process, url = start_serve(config, 2, log)
    try:
        await until_answering(url, ok=True)
        await inventory_read(url, fakes)
        results = await asyncio.gather(*(post(url, chat("mixtral")) for _ in range(12)))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    assert {status for status, _, _ in results} <= {200, 503}
    assert any(status == 200 for status, _, _ in results)
    assert 1 <= gpu_b.most_running <= 2


async def test_two_gateways_share_slots_through_redis(
    fakes: dict[str, FakeOllama], tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    gpu_b = fakes["gpu-b"]
    gpu_b.behavior = SLOW
    redis = urlsplit(redis_url)
    top = f"redis: {{host: {redis.hostname}, port: {redis.port or 6379}, key_prefix: '{redis_prefix}'}}"
    configs = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        configs.append(
            write_fleet_config(folder, fakes, per_backend={"gpu-b": {"max_concurrent": 2}}, top=top)
        )
    async with (
        running_gateway(configs[0], gpu_b) as one,
        running_gateway(configs[1], gpu_b) as two,
    ):
        await inventory_read(one.url, fakes)
        await inventory_read(two.url, fakes)
        async with held_streams(one.url, 1), held_streams(two.url, 1):
            report = {b["name"]: b for b in await backends_report(one.url)}
            assert (report["gpu-b"]["in_flight"], report["gpu-b"]["in_flight_everywhere"]) == (1, 2)
            status, _, body = await post(two.url, chat("mixtral"))
            assert status == 503 and b"backends_busy" in body
            status, _, body = await post(one.url, chat("mixtral"))
            assert status == 503 and b"backends_busy" in body
        gpu_b.behavior = Behavior()
        await eventually(lambda: answers(two.url, "mixtral"))
    assert gpu_b.most_running == 2
