"""The cache a worker holds (opened by the lifespan), and one named cache on it with its TTL and counters."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from citadel_proxy.cache.backend import CacheBackend, CacheError
from citadel_proxy.cache.breaker import Breaker
from citadel_proxy.cache.flight import SingleFlight
from citadel_proxy.cache.keys import Key
from citadel_proxy.cache.memory import MemoryBackend
from citadel_proxy.cache.redis_backend import RedisBackend
from citadel_proxy.config.schema import Config
from citadel_proxy.redis_client import redis_client

# Without Redis, each worker keeps at most this much in its own LRU.
MEMORY_MAX_BYTES = 256 * 1024 * 1024


class CacheMetrics:
    """Series by cache name (`embeddings`, `responses`): a bounded label set."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["cache"]
        self.hits = Counter(
            "citadel_cache_hits_total", "Lookups answered from the cache.", labels, registry=registry
        )
        self.misses = Counter(
            "citadel_cache_misses_total", "Lookups the cache could not answer.", labels, registry=registry
        )
        self.errors = Counter(
            "citadel_cache_errors_total",
            "Cache reads and writes that failed or were skipped (backend resting); corrupt entries.",
            labels,
            registry=registry,
        )
        self.stored_bytes = Counter(
            "citadel_cache_stored_bytes_total", "Bytes written to the cache.", labels, registry=registry
        )


@dataclass(frozen=True, slots=True)
class Cache:
    """What the Services hold: one backend for every cache, the flights in progress, the counters."""

    backend: CacheBackend
    flights: SingleFlight
    metrics: CacheMetrics

    def space(self, name: str, prefix: str, ttl_s: float) -> CacheSpace:
        m = self.metrics
        return CacheSpace(
            name,
            prefix,
            ttl_s,
            self.backend,
            m.hits.labels(name),
            m.misses.labels(name),
            m.errors.labels(name),
            m.stored_bytes.labels(name),
        )


@dataclass(frozen=True, slots=True)
class CacheSpace:
    """One cache on the shared backend. Its reads and writes never raise: failures are counted."""

    name: str
    prefix: str
    ttl_s: float
    backend: CacheBackend
    hits: Counter
    misses: Counter
    errors: Counter
    stored_bytes: Counter

    async def get_many(self, keys: Sequence[Key]) -> list[bytes | None]:
        try:
            return await self.backend.get_many([key.name for key in keys])
        except CacheError:
            self.errors.inc()
            return [None] * len(keys)

    async def put_many(self, items: Sequence[tuple[Key, bytes]]) -> None:
        if not items:
            return
        try:
            await self.backend.set_many([(key.name, value) for key, value in items], self.ttl_s)
        except CacheError:
            self.errors.inc()
            return
        self.stored_bytes.inc(sum(len(value) for _key, value in items))


async def open_cache(
    config: Config, stack: contextlib.AsyncExitStack, registry: CollectorRegistry, client: Any = None
) -> Cache:
    """Redis (behind a circuit breaker) when `config.redis` is set, else an in-process LRU."""
    backend: CacheBackend
    if config.redis is None:
        backend = MemoryBackend(MEMORY_MAX_BYTES)
    else:
        shared = client is not None
        backend = Breaker(
            RedisBackend(
                client if shared else redis_client(config.redis),
                config.redis.key_prefix,
                owns_client=not shared,
            )
        )
    stack.push_async_callback(backend.aclose)
    return Cache(backend, SingleFlight(), CacheMetrics(registry))
