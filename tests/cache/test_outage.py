"""Redis stopped, restarted or stalled under a running gateway: requests are served, the cache comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.cache.conftest import PrivateRedis, redis_yaml, write_cache_config
from tests.core.conftest import AUTH, Gateway, running_gateway
from tests.fakes.ollama import FakeOllama


@pytest.fixture
async def gateway(
    fake: FakeOllama, tmp_path: Path, cache_pipelines: Path, private_redis: PrivateRedis
) -> AsyncIterator[Gateway]:
    redis = redis_yaml(private_redis.url, "citadel-test:outage:")
    async with running_gateway(write_cache_config(tmp_path, fake.port, cache_pipelines, redis), fake) as gw:
        yield gw


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=10) as client:
        yield client


async def embed(http: httpx.AsyncClient, text: str) -> httpx.Response:
    started = time.monotonic()
    answer = await http.post("/api/embed", json={"model": "nomic-embed-text", "input": text})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["embeddings"][0]) == 768
    # Never a connect timeout per request: the breaker answers at once while Redis is away.
    assert time.monotonic() - started < 1.0
    return answer


async def errors(http: httpx.AsyncClient) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith('citadel_cache_errors_total{cache="embeddings"}'):
            return float(line.split()[-1])
    return 0.0


async def test_redis_stopped_mid_test_and_restarted(
    gateway: Gateway, http: httpx.AsyncClient, private_redis: PrivateRedis
) -> None:
    await embed(http, "kept")
    assert (await embed(http, "kept")).headers["x-cache"] == "HIT"
    private_redis.kill()
    for number in range(5):
        assert (await embed(http, f"while down {number}")).headers["x-cache"] == "MISS"
    assert (await embed(http, "kept")).headers["x-cache"] == "MISS"
    assert await errors(http) >= 1
    private_redis.start()
    # Back after the breaker's cool-down (5 s): an answer stored again is found again.
    deadline = time.monotonic() + 15
    while True:
        await embed(http, "after")
        if (await embed(http, "after")).headers["x-cache"] == "HIT":
            break
        assert time.monotonic() < deadline, "the cache did not come back after Redis restarted"
        await asyncio.sleep(0.5)


async def test_stalled_redis_is_bypassed(
    gateway: Gateway, http: httpx.AsyncClient, private_redis: PrivateRedis
) -> None:
    await embed(http, "warm")
    admin = Redis.from_url(private_redis.url)
    # DEBUG SLEEP blocks the whole server, as a saturated or swapping Redis would.
    stall = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "2"))  # type: ignore[no-untyped-call]
    await asyncio.sleep(0.1)
    try:
        assert (await embed(http, "warm")).headers["x-cache"] == "MISS"
        assert (await embed(http, "during")).headers["x-cache"] == "MISS"
        assert await errors(http) >= 1
    finally:
        await stall
        await admin.aclose()
    assert gateway.fake.embed_inputs == ["warm", "warm", "during"]
