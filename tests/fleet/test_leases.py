"""In-flight leases in Redis: shared by every holder, given back, renewed while held, and freed by
expiry when their holder dies without giving them back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from citadel_proxy.config.schema import FleetOptions, OllamaService
from citadel_proxy.fleet.backend import Backend, new_breaker
from citadel_proxy.fleet.metrics import BackendSeries, FleetMetrics
from citadel_proxy.fleet.slots import RedisSlots, WorkerSlots
from citadel_proxy.upstream.client import OllamaClient


def _backend() -> Backend:
    metrics = FleetMetrics(CollectorRegistry())
    return Backend(
        name="gpu-a",
        client=OllamaClient(OllamaService()),
        breaker=new_breaker(FleetOptions(), lambda _old, _new: None),
        series=BackendSeries.of(metrics, "gpu-a"),
        max_concurrent=2,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_leases_are_shared_and_given_back(redis: Redis, redis_prefix: str) -> None:
    one = RedisSlots(redis, redis_prefix, 30.0, WorkerSlots(1))
    two = RedisSlots(redis, redis_prefix, 30.0, WorkerSlots(1))
    a, b = _backend(), _backend()  # the same backend as two gateways see it
    first, second = await one.take(a), await two.take(b)
    assert first is not None and second is not None
    assert await one.take(a) is None and await two.take(b) is None  # max_concurrent 2 in all
    await one.give(a, first)
    assert await two.take(b) is not None


async def test_a_dead_holders_leases_expire_and_a_living_ones_do_not(redis: Redis, redis_prefix: str) -> None:
    dead = RedisSlots(redis, redis_prefix, 0.3, WorkerSlots(1))  # never renews: its gateway died
    living = RedisSlots(redis, redis_prefix, 0.3, WorkerSlots(1))
    living.start()
    try:
        assert await dead.take(_backend()) is not None
        assert await living.take(_backend()) is not None
        other = RedisSlots(redis, redis_prefix, 0.3, WorkerSlots(1))
        assert await other.take(_backend()) is None
        await asyncio.sleep(0.9)  # three lease lifetimes: the dead one's lapsed, the living one's renewed
        taken = await other.take(_backend())
        assert taken is not None
        assert await other.take(_backend()) is None
    finally:
        await living.close()


async def test_without_redis_each_worker_takes_its_share(
    unused_tcp_port_async: int, caplog: pytest.LogCaptureFixture
) -> None:
    # As the app's client (redis_client): no retries of its own.
    gone = Redis(
        host="127.0.0.1", port=unused_tcp_port_async, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    slots = RedisSlots(gone, "citadel-test:gone:", 30.0, WorkerSlots(2))  # two workers: one slot each
    backend = _backend()
    try:
        held = await slots.take(backend)
        assert held is not None
        assert await slots.take(backend) is None
        await slots.give(backend, held)
        assert backend.in_flight == 0
        # Redis was asked once: the circuit opened after the failure, so the next take did not wait on it.
        assert sum("Redis failed" in r.getMessage() for r in caplog.records) == 1
    finally:
        await gone.aclose()
