"""The sink's queue: encoded records in from the request path, batches out to the one writer task.

Not asyncio.Queue: every record went through its put_nowait and get_nowait, about ten Python calls
(the full check, the unfinished-task count, an Event cleared, the waiters woken), where a deque and one
waiter need an append and a popleft (README, "Performance").
"""

from __future__ import annotations

import asyncio
from collections import deque


class RecordQueue:
    """Bounded FIFO of encoded records with a single reader, which `stop` tells that no more will come."""

    __slots__ = ("_items", "_maxsize", "_waiter", "stopped")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[bytes] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self.stopped = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def finished(self) -> bool:
        """Stopped, and every record taken: the reader has nothing more to wait for."""
        return self.stopped and not self._items

    def offer(self, item: bytes) -> bool:
        """Queue `item`; False (nothing queued) when the queue is full."""
        items = self._items
        if len(items) >= self._maxsize:
            return False
        items.append(item)
        if self._waiter is not None:
            self._wake()
        return True

    def stop(self) -> None:
        """No more records will be offered: the reader takes those queued, then stops."""
        self.stopped = True
        if self._waiter is not None:
            self._wake()

    async def wait(self) -> None:
        """Return once the queue holds something, or is stopped (at once when it is either)."""
        while not self._items and not self.stopped:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def take(self, limit: int | None) -> list[bytes]:
        """Up to `limit` items (None: all), oldest first."""
        items = self._items
        count = len(items) if limit is None else min(limit, len(items))
        popleft = items.popleft
        return [popleft() for _ in range(count)]

    def _wake(self) -> None:
        """Wake the reader (called only while it waits)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
