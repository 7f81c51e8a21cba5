"""Tokens charged after an answer ride on the identity's next check: one Redis round trip per request."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from citadel_proxy.ratelimit.bucket import Limits
from citadel_proxy.ratelimit.shared import RedisLimiter


async def test_owed_tokens_count_at_the_next_acquire_and_flush_on_their_own(
    redis_url: str, redis_prefix: str
) -> None:
    client = Redis.from_url(redis_url)
    limiter = RedisLimiter(client, redis_prefix, flush_after_s=60)
    other = RedisLimiter(client, redis_prefix)  # another worker, sharing the limit
    limits = Limits(requests_per_minute=None, tokens_per_minute=100)
    try:
        assert (await limiter.acquire("key:a", limits)).allowed
        limiter.charge_soon("key:a", limits, 90)
        assert (await limiter.acquire("key:a", limits)).allowed  # 90 < 100, now in Redis
        assert not (await other.acquire("key:a", Limits(None, 80))).allowed  # the other worker sees them
        limiter.charge_soon("key:a", limits, 20)
        assert not (await limiter.acquire("key:a", limits)).allowed  # 110 >= 100
        limiter.charge_soon("key:b", limits, 100)
        await limiter.drain()  # shutdown (or flush_after_s) sends what no acquire carried
        assert not (await other.acquire("key:b", Limits(None, 90))).allowed
    finally:
        await limiter.aclose()
        await client.aclose()


async def test_owed_tokens_no_acquire_carries_are_sent_after_flush_after_s(
    redis_url: str, redis_prefix: str
) -> None:
    client = Redis.from_url(redis_url)
    limiter = RedisLimiter(client, redis_prefix, flush_after_s=0.05)
    other = RedisLimiter(client, redis_prefix)
    limits = Limits(requests_per_minute=None, tokens_per_minute=100)
    try:
        limiter.charge_soon("key:a", limits, 95)
        await asyncio.sleep(0.03)
        limiter.charge_soon("key:b", limits, 95)  # owed later: flushed by a later turn of the one timer
        limiter.charge_soon("key:a", limits, 1)  # rides with key:a's first charge
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not limiter._owed and not limiter._pending:
                break
        assert not (await other.acquire("key:a", Limits(None, 90))).allowed  # 96 tokens arrived
        assert not (await other.acquire("key:b", Limits(None, 90))).allowed
        assert limiter._flusher is None  # nothing owed: no timer left running
    finally:
        await limiter.aclose()
        await client.aclose()
