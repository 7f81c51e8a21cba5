"""Single flight: concurrent misses for one key make one upstream call; the others wait for its result."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Flight:
    """One caller's part in a key's flight: it leads (must settle it) or follows (awaits `wait`)."""

    key: str
    future: asyncio.Future[bytes | None]
    leader: bool

    async def wait(self) -> bytes | None:
        # shield: a follower that is cancelled must not cancel the future the other followers await.
        return await asyncio.shield(self.future)


class SingleFlight:
    """In-process, per worker. A result is a cache entry's bytes; None means the leader got nothing."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}

    def join(self, key: str) -> Flight:
        future = self._flights.get(key)
        if future is not None:
            return Flight(key, future, leader=False)
        future = self._flights[key] = asyncio.get_running_loop().create_future()
        return Flight(key, future, leader=True)

    def settle(self, flight: Flight, value: bytes | None) -> None:
        """End a flight this caller leads (again is harmless): its followers get `value`."""
        if not flight.leader:
            return
        # Only the caller's own flight: a later one for the same key may have started since.
        if self._flights.get(flight.key) is flight.future:
            del self._flights[flight.key]
        if not flight.future.done():
            flight.future.set_result(value)

    def __len__(self) -> int:
        return len(self._flights)
