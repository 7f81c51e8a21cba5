"""Coarse timeouts for many open streams at once: one periodic timer per owner instead of one per stream.

A stream's silence limit moves with every token Ollama sends. Re-arming an event-loop timer for each
token cost about 2 µs per token and about 600 bytes per open stream (uvloop's timer handle), and a
deadline held with `asyncio.timeout` about 800 bytes more. Here a watched object keeps its times in plain
floats and one sweep every `period_s` fires those that are due, so a limit fires up to `period_s` late:
nothing here is shorter than a second in practice (silence limits are minutes, deadlines tens of seconds).

A sweep looks at no more than `per_sweep` objects, the ones looked at longest ago: with thousands of
streams open, one sweep over all of them held the event loop for milliseconds ten times a second, and
every request that came meanwhile waited (README, Performance). Past `per_sweep` watched objects each is
looked at every `period_s * watched / per_sweep` instead, and a limit fires that much late at most.
"""

from __future__ import annotations

import asyncio
import logging
from itertools import islice
from typing import Protocol

_log = logging.getLogger(__name__)


class Watched(Protocol):
    def due(self, now: float) -> bool:
        """True when its limit has passed at `now` (the event loop's clock)."""
        ...

    def expire(self) -> None:
        """Its limit passed: act on it. It is no longer watched."""
        ...


# Objects one sweep looks at, at most: what a sweep holds the loop for is measured in README, Performance.
PER_SWEEP = 1000


class TimeoutSweeper:
    def __init__(self, period_s: float = 0.1, per_sweep: int = PER_SWEEP) -> None:
        self._period_s = period_s
        self._per_sweep = per_sweep
        # In the order they were last looked at (a dict keeps its insertion order): a sweep takes from
        # the front and puts back at the end what is not yet due.
        self._watched: dict[Watched, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, item: Watched) -> None:
        self._watched[item] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._period_s, self._sweep)

    def unwatch(self, item: Watched) -> None:
        self._watched.pop(item, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watched.clear()

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        watched = self._watched
        for item in list(islice(watched, self._per_sweep)):
            if item not in watched:  # unwatched by an expire() earlier in this sweep
                continue
            del watched[item]
            if not item.due(now):
                watched[item] = None
                continue
            try:
                item.expire()
            except Exception:  # one item's bug must not stop the others' timeouts
                _log.exception("a timeout failed to fire")
        # Idle when nothing is watched: no wake-ups for a gateway without open streams. An item that
        # watched itself again from expire() has already started the next sweep.
        if watched and self._timer is None:
            self._timer = loop.call_later(self._period_s, self._sweep)


class TaskDeadline:
    """A task's deadline on a sweeper: once it passes, the task is cancelled (up to a period late).

    What `asyncio.timeout` does for a whole answer, without its loop timer (scheduled and cancelled for
    every request, most of the few microseconds it costs). The task's own `except CancelledError` asks
    `end()` whether the cancellation was the deadline's alone, as asyncio.timeout turns that one into
    TimeoutError; `end()` in a `finally` stops the watch on every other way out.
    """

    __slots__ = ("_at", "_cancelling", "_sweeper", "_task", "expired")

    def __init__(self, sweeper: TimeoutSweeper, task: asyncio.Task[object], timeout_s: float) -> None:
        self._task = task
        # Cancellations already asked of the task are someone else's (as asyncio.timeout counts them).
        self._cancelling = task.cancelling()
        self._at = task.get_loop().time() + timeout_s
        self._sweeper: TimeoutSweeper | None = sweeper
        self.expired = False
        sweeper.watch(self)

    def due(self, now: float) -> bool:
        return now >= self._at

    def expire(self) -> None:
        if self._sweeper is not None:
            self.expired = True
            self._task.cancel()

    def end(self) -> bool:
        """No longer watched (once; later calls say False). True when the deadline cancelled the task
        and nobody else did: the cancellation is taken back, and the caller raises its timeout error."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is None:
            return False
        sweeper.unwatch(self)
        return self.expired and self._task.uncancel() <= self._cancelling
