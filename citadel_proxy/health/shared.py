"""One probe's result shared by the callers that ask for it together or soon after each other.

`/health` is public: without this, every call opened a PostgreSQL connection, a Redis client and a
request to each Ollama, so a client calling it in a loop, or many at once, made the gateway do the same
to its own backends (PostgreSQL's `max_connections` is shared with the audit writer and the key store).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedResult(Generic[T]):
    """The last run of a probe, reused while it started under `max_age_s` ago; callers that come while it
    runs wait for that run rather than starting their own."""

    __slots__ = ("_started_at", "_task")

    def __init__(self) -> None:
        self._task: asyncio.Task[T] | None = None
        self._started_at = -math.inf

    async def get(self, run: Callable[[], Awaitable[T]], max_age_s: float) -> T:
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or (task.done() and loop.time() - self._started_at >= max_age_s):
            self._task = task = asyncio.ensure_future(run())
            self._started_at = loop.time()
        # shield: a caller that leaves (its client gone) must not cancel the run the others wait for.
        return await asyncio.shield(task)
