"""A backend's circuit breaker: closed, open (requests skip it), half-open (one trial request)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


def _ignore(_old: State, _new: State) -> None:
    pass


class Breaker:
    """`failures` errors in a row open it for `cooldown_s`; then one caller (a request or the probe) gets
    the trial: its success closes the breaker, its failure opens it again."""

    __slots__ = ("_failures", "_on_change", "_open_until", "_trial_until", "cooldown_s", "state", "threshold")

    def __init__(
        self, *, failures: int, cooldown_s: float, on_change: Callable[[State, State], None] = _ignore
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.state: State = "closed"
        self._failures = 0
        self._open_until = 0.0
        self._trial_until = 0.0
        self._on_change = on_change

    def _move(self, new: State) -> None:
        if new != self.state:
            old, self.state = self.state, new
            self._on_change(old, new)

    def available(self) -> bool:
        """Whether a request may be sent now (without taking the trial)."""
        if self.state == "closed":
            return True
        now = time.monotonic()
        if self.state == "open":
            return now >= self._open_until
        return now >= self._trial_until  # half-open: a trial that never reported has lapsed

    def enter(self) -> bool:
        """Take the right to send a request: always when closed, once per cooldown otherwise."""
        if self.state == "closed":
            return True
        if not self.available():
            return False
        self._move("half_open")
        # The trial holds the breaker for a cooldown; one that never reports frees it then.
        self._trial_until = time.monotonic() + self.cooldown_s
        return True

    def succeeded(self) -> None:
        self._failures = 0
        self._move("closed")

    def failed(self) -> None:
        self._failures += 1
        if self.state == "half_open" or self._failures >= self.threshold:
            self._open_until = time.monotonic() + self.cooldown_s
            self._move("open")
