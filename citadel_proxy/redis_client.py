"""The worker's redis-py client (a connection pool) for the cache; the rate limiter, on every request's
path, has a pipelined connection of its own (redis_lean)."""

from __future__ import annotations

import contextlib

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from citadel_proxy.config.schema import Config
from citadel_proxy.config.schema import Redis as RedisSettings


def redis_client(settings: RedisSettings, *, timeout_s: float | None = None) -> Redis:
    """A client with its own pool of `max_connections`; `timeout_s` overrides both socket timeouts."""
    return Redis(
        host=settings.host,
        port=settings.port,
        db=settings.database,
        password=settings.password,
        max_connections=settings.max_connections,
        socket_timeout=timeout_s or settings.socket_timeout,
        socket_connect_timeout=timeout_s or settings.socket_connect_timeout,
        # No retries: the callers' circuit breakers decide what happens when Redis fails.
        retry=Retry(NoBackoff(), 0),
    )


async def open_redis(config: Config, stack: contextlib.AsyncExitStack) -> Redis | None:
    if config.redis is None:
        return None
    client = redis_client(config.redis)
    stack.push_async_callback(client.aclose)
    return client
