"""A worker's short memory of database key lookups, emptied whenever any key is created or revoked."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from citadel_proxy.pipeline.types import Principal

Entry = tuple[float, Principal | None]


@dataclass(slots=True)
class KeyCache:
    """Lookups (unknown keys too, so random keys cannot flood the database) kept for `ttl_s`.

    Entries are only kept while `listening` is true, i.e. while this worker's LISTEN connection is up
    and will hear every revocation; without it each request asks the database. `clear` bumps a
    generation so that a lookup which started before a revocation cannot store its stale answer after.
    """

    ttl_s: float
    max_entries: int = 10_000
    listening: bool = False
    generation: int = 0
    _entries: dict[bytes, Entry] = field(default_factory=dict)

    def get(self, digest: bytes) -> Entry | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] < time.monotonic() or not self.listening:
            self._entries.pop(digest, None)
            return None
        return entry

    def put(self, digest: bytes, principal: Principal | None, generation: int) -> None:
        if not self.listening or self.ttl_s <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl_s, principal)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1
