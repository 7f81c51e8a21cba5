"""The Redis limiter: one atomic script per check, shared by every worker and every gateway instance.

When Redis fails or is slow, a circuit breaker sends checks to the in-process limiter for a few
seconds, so a request never waits on a dead server more than once per cool-down and is never failed
because the limiter is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from citadel_proxy.ratelimit.bucket import Decision, Limits, decision
from citadel_proxy.ratelimit.local import LocalLimiter

log = logging.getLogger(__name__)

# How long a check may wait for Redis: far above a healthy round trip, far below a request's patience.
CALL_TIMEOUT_S = 0.25

# The same arithmetic as bucket.Bucket; Redis' own clock, so instances with skewed clocks agree.
# KEYS[1]: the identity's hash. ARGV: "acquire" | "charge", rpm, tpm (0: no limit), tokens to charge
# (an acquire carries the tokens its identity still owed, so most requests cost one round trip).
SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local rpm, tpm, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')

local function drained(level, at, limit)
  if limit <= 0 or not level then return 0 end
  local left = tonumber(level) - (now - tonumber(at)) * limit / 60000
  if left < 0 then return 0 end
  return left
end

local r = drained(s[1], s[2], rpm)
local t = drained(s[3], s[4], tpm) + cost
local allowed, retry = 1, 0
if ARGV[1] == 'acquire' then
  if rpm > 0 and r + 1 > rpm then allowed = 0; retry = (r + 1 - rpm) * 60000 / rpm end
  if tpm > 0 and t >= tpm then allowed = 0; retry = math.max(retry, (t - tpm + 1) * 60000 / tpm) end
  if allowed == 1 and rpm > 0 then r = r + 1 end
end

local empty_in = 0
if rpm > 0 then
  redis.call('HSET', KEYS[1], 'r', tostring(r), 'rt', tostring(now))
  empty_in = r * 60000 / rpm
end
if tpm > 0 then
  redis.call('HSET', KEYS[1], 't', tostring(t), 'tt', tostring(now))
  empty_in = math.max(empty_in, t * 60000 / tpm)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(empty_in) + 1000)
return {allowed, tostring(r), tostring(t), tostring(retry)}
"""


@dataclass(slots=True)
class RedisLimiter:
    # LeanRedis in the gateway; redis-py's client works too (anything with register_script). The client
    # bounds each call (LeanRedis: reply_timeout_s=CALL_TIMEOUT_S; redis-py: socket_timeout).
    client: Any
    prefix: str
    fallback: LocalLimiter = field(default_factory=LocalLimiter)
    call_timeout_s: float = CALL_TIMEOUT_S
    cooldown_s: float = 5.0
    # Tokens charged with charge_soon wait this long for the identity's next acquire to carry them.
    flush_after_s: float = 0.2
    _script: Any = None
    # identity -> (limits, tokens owed, when the oldest of them was owed: the loop's clock)
    _owed: dict[str, tuple[Limits, int, float]] = field(default_factory=dict)
    _open_until: float = 0.0
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    # One timer for all owed charges (not a task and a timer per request).
    _flusher: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        # register_script runs EVALSHA, loading the script only if Redis does not know it yet.
        self._script = self.client.register_script(SCRIPT)

    async def acquire(self, identity: str, limits: Limits) -> Decision:
        if limits.empty:
            return decision(limits, True, 0, 0, 0, "none")
        owed = self._owed.pop(identity, None)
        cost = owed[1] if owed is not None and limits.tokens_per_minute else 0
        raw = await self._run(identity, "acquire", limits, cost)
        if raw is None:
            if owed is not None:
                self.fallback.charge_now(identity, owed[0], owed[1])
            return self.fallback.acquire_now(identity, limits)
        allowed, requests, tokens, retry_ms = raw
        return decision(limits, allowed == 1, float(requests), float(tokens), float(retry_ms), "redis")

    async def charge(self, identity: str, limits: Limits, tokens: int) -> None:
        if tokens <= 0 or not limits.tokens_per_minute:
            return
        if await self._run(identity, "charge", limits, tokens) is None:
            self.fallback.charge_now(identity, limits, tokens)

    def charge_soon(self, identity: str, limits: Limits, tokens: int) -> None:
        """Charge without waiting (from code that must not await, such as a stream's read).

        The tokens ride on the identity's next acquire when one comes within `flush_after_s`, else a
        charge of their own is sent: a busy key costs one Redis round trip per request, not two.
        """
        if tokens <= 0 or not limits.tokens_per_minute:
            return
        owed = self._owed.get(identity)
        if owed is not None:
            self._owed[identity] = (limits, owed[1] + tokens, owed[2])
            return
        loop = asyncio.get_running_loop()
        self._owed[identity] = (limits, tokens, loop.time())
        if self._flusher is None:
            self._flusher = loop.call_later(self.flush_after_s, self._flush_due)

    def _flush_due(self) -> None:
        """Send the charges no acquire carried within flush_after_s; wait again for the others."""
        self._flusher = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        oldest = None
        for identity, (_, _, since) in list(self._owed.items()):
            if now - since >= self.flush_after_s:
                self._track(self._flush(identity))
            elif oldest is None or since < oldest:
                oldest = since
        if oldest is not None:
            self._flusher = loop.call_later(oldest + self.flush_after_s - now, self._flush_due)

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _flush(self, identity: str) -> None:
        owed = self._owed.pop(identity, None)
        if owed is not None:
            await self.charge(identity, owed[0], owed[1])

    async def drain(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        for identity in list(self._owed):
            self._track(self._flush(identity))
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._open_until

    async def _run(self, identity: str, op: str, limits: Limits, tokens: int) -> Any:
        now = time.monotonic()
        if now < self._open_until:
            return None
        # While this call probes a recovering Redis, concurrent checks keep using the fallback.
        probing = self._open_until > 0
        if probing:
            self._open_until = now + self.call_timeout_s
        args = [op, limits.requests_per_minute or 0, limits.tokens_per_minute or 0, tokens]
        try:
            result = await self._script(keys=[f"{self.prefix}rl:{identity}"], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._trip(exc, probing)
            return None
        if probing:
            log.warning("Redis is back; rate limits are shared again")
        self._open_until = 0.0
        return result

    def _trip(self, exc: Exception, probing: bool) -> None:
        if not probing:
            log.warning(
                "Redis rate limiter unavailable (%s); counting in this process for %.0f s",
                exc or type(exc).__name__,
                self.cooldown_s,
            )
        self._open_until = time.monotonic() + self.cooldown_s
