"""A circuit breaker around a cache backend: a failing or slow backend is left alone for a while.

Every call is bounded by `call_timeout_s`. After a failure the breaker opens for `cooldown_s`: calls fail
at once (CacheUnavailable) instead of each waiting for a connect timeout. Then one call probes the backend
while the others still fail fast; its success closes the breaker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from citadel_proxy.cache.backend import CacheBackend, CacheError, CacheUnavailable
from citadel_proxy.circuit import Circuit

log = logging.getLogger(__name__)
T = TypeVar("T")


class Breaker:
    def __init__(
        self, backend: CacheBackend, *, call_timeout_s: float = 0.25, cooldown_s: float = 5.0
    ) -> None:
        self.backend = backend
        self.call_timeout_s = call_timeout_s
        self._circuit = Circuit(probe_s=call_timeout_s, cooldown_s=cooldown_s)

    @property
    def open(self) -> bool:
        return self._circuit.open

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._call(self.backend.get_many(keys))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        await self._call(self.backend.set_many(items, ttl_s))

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def _call(self, call: Coroutine[Any, Any, T]) -> T:
        probing = self._circuit.enter()
        if probing is None:
            call.close()
            raise CacheUnavailable("the cache backend is resting after a failure")
        try:
            async with asyncio.timeout(self.call_timeout_s):
                result = await call
        except TimeoutError:
            self._trip(f"no answer within {self.call_timeout_s * 1000:.0f} ms", probing)
            raise CacheError("the cache backend did not answer in time") from None
        except CacheError as exc:
            self._trip(str(exc), probing)
            raise
        if probing:
            log.warning("cache backend is back")
        self._circuit.succeeded()
        return result

    def _trip(self, why: str, probing: bool) -> None:
        if not probing:
            log.warning("cache backend unavailable (%s); not tried for %.0f s", why, self._circuit.cooldown_s)
        self._circuit.failed()
