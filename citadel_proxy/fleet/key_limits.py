"""Requests in flight per key (`ollama.fleet.max_in_flight_per_key`), so one key's batch cannot take
every slot and fill the queues. Per worker, like the queues."""

from __future__ import annotations

import asyncio

from citadel_proxy import errors
from citadel_proxy.pipeline.types import Context


class KeyLimits:
    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit, self._retry_after_s = limit, retry_after_s
        self._running: dict[str, int] = {}
        self._counted: set[asyncio.Task[object]] = set()

    def enter(self, ctx: Context) -> None:
        """Count this request against its key until its task ends (the stream included), or refuse it."""
        if not self.limit:
            return
        task = asyncio.current_task()
        if task is None or task in self._counted:
            return
        who = ctx.principal.name if ctx.principal is not None else ctx.client
        running = self._running.get(who, 0)
        if running >= self.limit:
            raise errors.RateLimited(
                f"this key has {running} requests in flight, the most it may have; try again shortly",
                code="too_many_in_flight",
                headers={"Retry-After": str(self._retry_after_s)},
            )
        self._running[who] = running + 1
        self._counted.add(task)

        def done(finished: asyncio.Task[object]) -> None:
            self._counted.discard(finished)
            left = self._running[who] - 1
            if left:
                self._running[who] = left
            else:
                del self._running[who]

        task.add_done_callback(done)
