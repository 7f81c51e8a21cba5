"""The in-process limiter: used without Redis, and while Redis is unreachable. Counts for one worker only."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from citadel_proxy.ratelimit.bucket import Bucket, Decision, Limits, decision


def _now_ms() -> float:
    return time.monotonic() * 1000


@dataclass(slots=True)
class LocalLimiter:
    # Buckets of identities seen lately; empty ones are dropped when the table grows past this.
    max_identities: int = 100_000
    _buckets: dict[str, Bucket] = field(default_factory=dict)

    def acquire_now(self, identity: str, limits: Limits) -> Decision:
        now = _now_ms()
        bucket = self._bucket(identity, now)
        allowed, requests, tokens, retry_ms = bucket.acquire(limits, now)
        return decision(limits, allowed, requests, tokens, retry_ms, "local")

    def charge_now(self, identity: str, limits: Limits, tokens: int) -> None:
        now = _now_ms()
        self._bucket(identity, now).charge(limits, now, tokens)

    async def acquire(self, identity: str, limits: Limits) -> Decision:
        return self.acquire_now(identity, limits)

    async def charge(self, identity: str, limits: Limits, tokens: int) -> None:
        self.charge_now(identity, limits, tokens)

    def charge_soon(self, identity: str, limits: Limits, tokens: int) -> None:
        self.charge_now(identity, limits, tokens)

    async def drain(self) -> None:
        pass  # charges here are immediate

    async def aclose(self) -> None:
        pass

    def _bucket(self, identity: str, now_ms: float) -> Bucket:
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= self.max_identities:
                self._forget_empty(now_ms)
            bucket = self._buckets[identity] = Bucket()
        return bucket

    def _forget_empty(self, now_ms: float) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if b.expires_at > now_ms}
        if len(self._buckets) >= self.max_identities:
            # Everyone is busy: forgetting the oldest half errs on the side of admitting requests.
            keep = list(self._buckets.items())[len(self._buckets) // 2 :]
            self._buckets = dict(keep)
