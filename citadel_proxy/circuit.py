"""A circuit breaker's state, shared by the callers that must not wait on a dead server (the response
cache's backend, the rate limiter's Redis): each keeps its own errors and log lines.

Closed: every call goes through. After a failure it opens for `cooldown_s`: calls fail fast. Then one call
probes (for at most `probe_s`) while the others still fail fast; its success closes it again.
"""

from __future__ import annotations

import time


class Circuit:
    __slots__ = ("_open_until", "cooldown_s", "probe_s")

    def __init__(self, *, probe_s: float, cooldown_s: float) -> None:
        self.probe_s = probe_s
        self.cooldown_s = cooldown_s
        self._open_until = 0.0

    @property
    def open(self) -> bool:
        return time.monotonic() < self._open_until

    def enter(self) -> bool | None:
        """None: fail fast, the circuit is open. Else whether this call is the probe."""
        now = time.monotonic()
        if now < self._open_until:
            return None
        probing = self._open_until > 0
        if probing:
            self._open_until = now + self.probe_s
        return probing

    def succeeded(self) -> None:
        self._open_until = 0.0

    def failed(self) -> None:
        self._open_until = time.monotonic() + self.cooldown_s
