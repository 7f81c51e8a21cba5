"""The limit arithmetic, shared by both limiters: leaky buckets counted in requests and in tokens.

Each identity has two buckets. Every admitted request adds 1 to the request bucket and every token
used adds 1 to the token bucket; each drains continuously at `limit` per minute, so a full bucket is
empty again a minute later. A request is admitted when the request bucket has room for one more and
the token bucket is not full; the tokens it used are added afterwards (they are only known then), so a
large answer can leave the bucket over full and the next request waits until it drained below the
limit. This is the GCRA family: one number and a timestamp per bucket, no per-request log, no burst
at window edges as with fixed windows. The level is kept in requests and tokens rather than as a
"theoretical arrival time", so pipelines with different limits can check the same identity's buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

MINUTE_MS = 60_000.0


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @property
    def empty(self) -> bool:
        return not self.requests_per_minute and not self.tokens_per_minute


def lowest(*values: int | None) -> int | None:
    """The strictest of several limits; None (no limit) when none is set."""
    given = [v for v in values if v]
    return min(given) if given else None


# Structs rather than frozen dataclasses: one of each per admitted request, and a frozen dataclass's
# __init__ (object.__setattr__ per field) cost five times as much.
class Window(msgspec.Struct, frozen=True):
    limit: int
    remaining: int
    # Until the bucket is empty again, i.e. the whole limit is available (OpenAI's "reset").
    reset_s: float


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    retry_after_s: float
    requests: Window | None
    tokens: Window | None
    backend: str


def decision(
    limits: Limits, allowed: bool, requests: float, tokens: float, retry_ms: float, backend: str
) -> Decision:
    """A decision from the bucket levels after the check (the same for the Redis script and in-process)."""
    return Decision(
        allowed=allowed,
        retry_after_s=retry_ms / 1000,
        requests=_window(limits.requests_per_minute, requests),
        tokens=_window(limits.tokens_per_minute, tokens),
        backend=backend,
    )


def _window(limit: int | None, level: float) -> Window | None:
    if not limit:
        return None
    left = limit - level
    # int() is floor() for what is above zero, without a call into math.
    return Window(limit, int(left) if left > 0 else 0, level * 60 / limit)


def drained(level: float, at_ms: float, now_ms: float, limit: int | None) -> float:
    if not limit:
        return 0.0
    return max(0.0, level - (now_ms - at_ms) * limit / MINUTE_MS)


@dataclass(slots=True)
class Bucket:
    """One identity's buckets in this process; `acquire` and `charge` mirror the Redis script."""

    requests: float = 0.0
    requests_at: float = 0.0
    tokens: float = 0.0
    tokens_at: float = 0.0
    expires_at: float = 0.0

    def acquire(self, limits: Limits, now_ms: float) -> tuple[bool, float, float, float]:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        r = drained(self.requests, self.requests_at, now_ms, rpm)
        t = drained(self.tokens, self.tokens_at, now_ms, tpm)
        allowed, retry = True, 0.0
        if rpm and r + 1 > rpm:
            allowed, retry = False, (r + 1 - rpm) * MINUTE_MS / rpm
        if tpm and t >= tpm:
            allowed, retry = False, max(retry, (t - tpm + 1) * MINUTE_MS / tpm)
        if allowed and rpm:
            r += 1
        self._store(limits, now_ms, r, t)
        return allowed, r, t, retry

    def charge(self, limits: Limits, now_ms: float, tokens: int) -> None:
        r = drained(self.requests, self.requests_at, now_ms, limits.requests_per_minute)
        t = drained(self.tokens, self.tokens_at, now_ms, limits.tokens_per_minute) + tokens
        self._store(limits, now_ms, r, t)

    def _store(self, limits: Limits, now_ms: float, r: float, t: float) -> None:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if rpm:
            self.requests, self.requests_at = r, now_ms
        if tpm:
            self.tokens, self.tokens_at = t, now_ms
        empty_in = max(r * MINUTE_MS / rpm if rpm else 0.0, t * MINUTE_MS / tpm if tpm else 0.0)
        self.expires_at = now_ms + empty_in
