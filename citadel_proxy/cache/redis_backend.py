"""The Redis backend: MGET for lookups, one pipelined SET ... PX per store, keys under the instance prefix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from citadel_proxy.cache.backend import CacheError
from citadel_proxy.errors import reason


class RedisBackend:
    def __init__(self, client: Any, prefix: str, *, owns_client: bool = True) -> None:
        self._client = client
        self._prefix = prefix
        self._owns_client = owns_client

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            values = await self._client.mget([self._prefix + key for key in keys])
        except (RedisError, OSError) as exc:
            raise CacheError(f"Redis lookup failed: {reason(exc)}") from None
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
            raise CacheError(f"Redis store failed: {reason(exc)}") from None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
