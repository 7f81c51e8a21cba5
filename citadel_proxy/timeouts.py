"""Coarse timeouts for many open streams at once: one periodic timer per owner instead of one per stream.

A stream's silence limit moves with every token Ollama sends. Re-arming an event-loop timer for each
token cost about 2 µs per token and about 600 bytes per open stream (uvloop's timer handle), and a
deadline held with `asyncio.timeout` about 800 bytes more. Here a watched object keeps its times in plain
floats and one sweep every `period_s` fires those that are due, so a limit fires up to `period_s` late:
nothing here is shorter than a second in practice (silence limits are minutes, deadlines tens of seconds).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

_log = logging.getLogger(__name__)


class Watched(Protocol):
    def due(self, now: float) -> bool:
        """True when its limit has passed at `now` (the event loop's clock)."""
        ...

    def expire(self) -> None:
        """Its limit passed: act on it. It is no longer watched."""
        ...


class TimeoutSweeper:
    def __init__(self, period_s: float = 0.1) -> None:
        self._period_s = period_s
        self._watched: set[Watched] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, item: Watched) -> None:
        self._watched.add(item)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._period_s, self._sweep)

    def unwatch(self, item: Watched) -> None:
        self._watched.discard(item)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watched.clear()

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for item in [item for item in self._watched if item.due(now)]:
            self._watched.discard(item)
            try:
                item.expire()
            except Exception:  # one item's bug must not stop the others' timeouts
                _log.exception("a timeout failed to fire")
        # Idle when nothing is watched: no wake-ups for a gateway without open streams. An item that
        # watched itself again from expire() has already started the next sweep.
        if self._watched and self._timer is None:
            self._timer = loop.call_later(self._period_s, self._sweep)
