"""How many failed authentications a client address may make before it is told to wait (429).

Per worker and in memory (no Redis): the limit protects this worker's time, log and key lookups from a
flood of guessed keys, so it needs no shared count; with N workers an address gets up to N times the
limit. The address is the one `gateway.trusted_proxies` establishes, so an attacker behind the same nginx
as a legitimate client locks out their own address only. While an address is over its limit, every
request from it that would look up a key is refused before the lookup, whether its key is good or not:
answering a good key differently would tell the guesser which guess was right. A request without an
address (a Unix socket) is not limited: every such client would share one count, and one could lock out
all the others.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import islice

from citadel_proxy.errors import RateLimited


@dataclass(slots=True)
class _Window:
    end: float  # time.monotonic()
    failures: int


class FailedAuthLimiter:
    """Fixed windows per address: `limit` failures in `window_s`, then 429 until the window ends."""

    def __init__(self, limit: int, window_s: float, max_clients: int) -> None:
        self._limit = limit
        self._window_s = window_s
        self._max_clients = max_clients
        # Dicts keep insertion order: the oldest window first.
        self._windows: dict[str, _Window] = {}

    def failed(self, client: str) -> None:
        """Count a failed authentication of `client`."""
        if not self._limit or not client:
            return
        now = time.monotonic()
        window = self._windows.get(client)
        if window is not None and window.end > now:
            window.failures += 1
            return
        if window is None and len(self._windows) >= self._max_clients:
            self._forget(now)
        # Re-inserted, so the dict stays ordered by window start.
        self._windows.pop(client, None)
        self._windows[client] = _Window(now + self._window_s, 1)

    def check(self, client: str) -> None:
        """Raise RateLimited (429, Retry-After) while `client` is over its limit."""
        window = self._windows.get(client)
        if window is None or window.failures < self._limit:
            return
        left = window.end - time.monotonic()
        if left <= 0:
            del self._windows[client]
            return
        seconds = math.ceil(left)
        raise RateLimited(
            f"Too many failed authentications from your address; retry after {seconds} s.",
            code="too_many_failed_authentications",
            headers={"Retry-After": str(seconds)},
        )

    def _forget(self, now: float) -> None:
        """Room for a new address: ended windows first, else the oldest tenth (their count restarts)."""
        ended = [client for client, window in self._windows.items() if window.end <= now]
        if not ended:
            ended = list(islice(self._windows, max(1, self._max_clients // 10)))
        for client in ended:
            del self._windows[client]
