"""What a cache backend is (a byte store with expiry), and the errors a cache reports to its caller.

A cache error never reaches a client: the caller counts it and goes on without the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class CacheError(Exception):
    """The backend failed, was too slow, or answered something that is not what was asked."""


class CacheUnavailable(CacheError):
    """The circuit breaker is open: the backend is not even tried for now."""


class CacheBackend(Protocol):
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The value of each key, in order (None: absent or expired). Raises CacheError."""
        ...

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        """Store each value under its key for `ttl_s` seconds. Raises CacheError."""
        ...

    async def aclose(self) -> None: ...
