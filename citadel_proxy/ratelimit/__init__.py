"""Requests and tokens per minute per identity: shared through Redis, or counted in-process without it."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from citadel_proxy.ratelimit.bucket import Decision, Limits, lowest
from citadel_proxy.ratelimit.headers import rate_limit_headers
from citadel_proxy.ratelimit.local import LocalLimiter
from citadel_proxy.ratelimit.shared import CALL_TIMEOUT_S, RedisLimiter
from citadel_proxy.redis_lean import LeanRedis

__all__ = [
    "Decision",
    "Limits",
    "LocalLimiter",
    "RateLimiter",
    "RedisLimiter",
    "lowest",
    "open_rate_limiter",
    "rate_limit_headers",
]


class RateLimiter(Protocol):
    async def acquire(self, identity: str, limits: Limits) -> Decision:
        """Admit and count one request, or refuse it; never raises because a backend is down."""
        ...

    def acquire_now(self, identity: str, limits: Limits) -> Decision | None:
        """`acquire` when it can decide without waiting (the in-process limiter always; Redis's with a
        lease in hand), else None: then `acquire`."""
        ...

    async def charge(self, identity: str, limits: Limits, tokens: int) -> None: ...

    def charge_soon(self, identity: str, limits: Limits, tokens: int) -> None:
        """Like `charge`, for callers that must not await."""
        ...

    async def drain(self) -> None:
        """Wait for the charges in flight."""
        ...

    async def aclose(self) -> None: ...


async def open_rate_limiter(config: Any, stack: contextlib.AsyncExitStack) -> RateLimiter:
    """A Redis limiter when `config.redis` is set (on a pipelined connection of its own), else in-process."""
    limiter: RateLimiter
    if config.redis is None:
        limiter = LocalLimiter()
    else:
        client = LeanRedis.from_settings(config.redis, reply_timeout_s=CALL_TIMEOUT_S)
        stack.push_async_callback(client.aclose)
        limiter = RedisLimiter(client, config.redis.key_prefix)
    stack.push_async_callback(limiter.aclose)
    return limiter
