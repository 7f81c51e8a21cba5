"""The Redis backend: MGET for lookups, one pipelined SET ... PX per store, keys under the instance prefix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from citadel_proxy.cache.backend import CacheError
from citadel_proxy.config.schema import Redis as RedisSettings


def redis_client(settings: RedisSettings) -> Redis:
    """A client with its own connection pool of `max_connections`."""
    return Redis(
        host=settings.host,
        port=settings.port,
        db=settings.database,
        password=settings.password,
        max_connections=settings.max_connections,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_connect_timeout,
        # No retries: the circuit breaker decides what happens when Redis fails.
        retry=Retry(NoBackoff(), 0),
    )


class RedisBackend:
    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            values = await self._client.mget([self._prefix + key for key in keys])
        except (RedisError, OSError) as exc:
            raise CacheError(f"Redis lookup failed: {exc or type(exc).__name__}") from None
        if not isinstance(values, list) or len(values) != len(keys):
            raise CacheError("Redis answered MGET with something other than one value per key")
        if not all(value is None or isinstance(value, bytes) for value in values):
            raise CacheError("Redis answered MGET with values that are not bytes")
        return values

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        ttl_ms = max(int(ttl_s * 1000), 1)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self._prefix + key, value, px=ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheError(f"Redis store failed: {exc or type(exc).__name__}") from None

    async def aclose(self) -> None:
        await self._client.aclose()
