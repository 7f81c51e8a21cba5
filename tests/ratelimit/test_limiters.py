"""Both limiters behave alike; the Redis one is shared by clients and processes and survives Redis dying."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citadel_proxy.config.schema import Config
from citadel_proxy.config.schema import Redis as RedisSettings
from citadel_proxy.ratelimit import LocalLimiter, RateLimiter, RedisLimiter, open_rate_limiter
from citadel_proxy.ratelimit.bucket import Limits
from citadel_proxy.redis_lean import LeanRedis
from tests.ratelimit.conftest import OwnRedis, redis_client

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "local":
        yield LocalLimiter()
        return
    client = redis_client(request.getfixturevalue("redis_url"))
    limiter = RedisLimiter(client, request.getfixturevalue("redis_prefix"))
    yield limiter
    await limiter.aclose()
    await client.aclose()


async def test_requests_per_minute(limiter: RateLimiter) -> None:
    limits = Limits(requests_per_minute=3)
    decisions = [await limiter.acquire("key:a", limits) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.requests.remaining for d in decisions if d.requests] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert 19 < refused.retry_after_s <= 20
    assert (await limiter.acquire("key:b", limits)).allowed  # identities are counted apart


async def test_tokens_are_charged_after_the_exchange(limiter: RateLimiter) -> None:
    limits = Limits(requests_per_minute=100, tokens_per_minute=1000)
    assert (await limiter.acquire("key:t", limits)).allowed
    await limiter.charge("key:t", limits, 600)
    second = await limiter.acquire("key:t", limits)
    assert second.allowed and second.tokens is not None and 399 <= second.tokens.remaining <= 400
    limiter.charge_soon("key:t", limits, 500)
    await limiter.drain()
    third = await limiter.acquire("key:t", limits)
    assert not third.allowed and third.tokens is not None and third.tokens.remaining == 0
    assert third.requests is not None and third.requests.remaining == 98  # a refusal is not counted


async def test_two_clients_share_one_limit(
    client: LeanRedis, other_client: LeanRedis, redis_prefix: str
) -> None:
    a, b = RedisLimiter(client, redis_prefix), RedisLimiter(other_client, redis_prefix)
    limits = Limits(requests_per_minute=10)
    results = await asyncio.gather(*((a if i % 2 else b).acquire("key:shared", limits) for i in range(16)))
    assert sum(d.allowed for d in results) == 10
    assert {d.backend for d in results} == {"redis"}


def test_two_processes_share_one_limit(redis_url: str, redis_prefix: str) -> None:
    command = [
        sys.executable,
        "-m",
        "tests.ratelimit._worker",
        redis_url,
        redis_prefix,
        "key:procs",
        "12",
        "10",
    ]
    workers = [
        subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    admitted = [int(worker.communicate(timeout=30)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert sum(admitted) == 12  # 20 attempts, one limit of 12 between them
    assert all(count >= 2 for count in admitted)  # both really took part


async def test_redis_stopped_mid_test_falls_back_to_counting_in_process(own_redis: OwnRedis) -> None:
    client = redis_client(own_redis.url)
    # One slot per check (no leases): every check here is meant to reach Redis.
    limiter = RedisLimiter(client, "rl-test:", cooldown_s=30, max_lease=1)
    try:
        limits = Limits(requests_per_minute=100)
        assert (await limiter.acquire("key:x", limits)).backend == "redis"
        own_redis.kill()

        started = time.monotonic()
        fallback = await limiter.acquire("key:x", limits)
        assert fallback.allowed and fallback.backend == "local"
        assert limiter.degraded
        # The breaker is open: later checks go straight to the fallback, no connect attempt each time.
        for _ in range(20):
            assert (await limiter.acquire("key:x", limits)).backend == "local"
        await limiter.charge("key:x", Limits(tokens_per_minute=10), 5)
        assert time.monotonic() - started < 1
    finally:
        await limiter.aclose()
        await client.aclose()


async def test_redis_back_after_the_cool_down(own_redis: OwnRedis) -> None:
    dead = redis_client("redis://127.0.0.1:1/0")  # nothing listens on port 1
    limiter = RedisLimiter(dead, "rl-test:", cooldown_s=0.05)
    try:
        assert (await limiter.acquire("k", Limits(5))).backend == "local"
        await asyncio.sleep(0.1)
        limiter.client = redis_client(own_redis.url)
        limiter.__post_init__()
        assert (await limiter.acquire("k", Limits(5))).backend == "redis"
        assert not limiter.degraded
    finally:
        await dead.aclose()
        await limiter.client.aclose()


async def test_open_rate_limiter(redis_url: str) -> None:
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    async with contextlib.AsyncExitStack() as stack:
        assert isinstance(await open_rate_limiter(Config(), stack), LocalLimiter)
        config = Config(redis=RedisSettings(host=host, port=int(port), key_prefix="citadel-test:open:"))
        shared = await open_rate_limiter(config, stack)
        assert isinstance(shared, RedisLimiter)
        assert (await shared.acquire("key:open", Limits(1))).backend == "redis"
        await shared.client.execute("DEL", "citadel-test:open:rl:key:open")


async def test_a_hung_redis_falls_back_instead_of_holding_requests(own_redis: OwnRedis) -> None:
    """Redis accepts but stops answering (SIGSTOP): the check is bounded by the client's reply timeout."""
    client = redis_client(own_redis.url)
    limiter = RedisLimiter(client, "rl-test:", cooldown_s=30, max_lease=1)
    try:
        assert (await limiter.acquire("key:h", Limits(100))).backend == "redis"
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            decision = await asyncio.wait_for(limiter.acquire("key:h", Limits(100)), 5)
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        assert decision.allowed and decision.backend == "local" and limiter.degraded
    finally:
        await limiter.aclose()
        await client.aclose()
