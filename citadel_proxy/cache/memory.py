"""The in-process backend used without Redis: an LRU bounded in bytes, one per worker."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

# Rough cost of one entry beyond its key and value (dict slot, tuple, float, object headers).
_ENTRY_OVERHEAD = 120


class MemoryBackend:
    """Least recently used entries leave first once `max_bytes` is reached; expired ones when met."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._get(key, time.monotonic()) for key in keys]

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        expires = time.monotonic() + ttl_s
        for key, value in items:
            self._set(key, value, expires)

    async def aclose(self) -> None:
        self._entries.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: str, now: float) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def _set(self, key: str, value: bytes, expires: float) -> None:
        cost = _cost(key, value)
        if cost > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, expires)
        self.size += cost
        while self.size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        value, _expires = self._entries.pop(key)
        self.size -= _cost(key, value)


def _cost(key: str, value: bytes) -> int:
    return len(key) + len(value) + _ENTRY_OVERHEAD
