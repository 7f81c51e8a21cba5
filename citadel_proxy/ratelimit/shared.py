"""The Redis limiter: one atomic script per check, shared by every worker and every gateway instance.

Leases: a check asks Redis for a few request slots at once (about 2% of the identity's limit, at most
64; one slot for limits under 100 per minute). The slots are counted in Redis when granted, so the
shared total is never exceeded; the worker then admits that many requests of the identity without a
round trip, for at most `lease_s`. Slots left unused go back to Redis when the lease ends. The cost: a
slot held by one worker is not available to another for up to `lease_s`, so near its limit an identity
may be refused a few requests early. With small limits every request asks Redis, as before.
A lease of 4 slots or more is renewed once a quarter of it is left, in the background: the slots in
hand keep admitting requests while Redis answers, so a busy identity's requests do not all stop and
wait for a round trip every lease (at a few hundred requests a second, most of a burst did).
A renewal asks for `lease_window_s` (a quarter second) of requests at the rate the lease was used,
within the same 2% of the limit: at thousands of requests a second, a quarter of a 64-slot lease ran
out before Redis' answer came back through a busy loop, and the requests after it waited (README,
"Performance").

When Redis fails or is slow, a circuit breaker sends checks to the in-process limiter for a few
seconds, so a request never waits on a dead server more than once per cool-down and is never failed
because the limiter is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from redis.exceptions import RedisError

from citadel_proxy.background import mark_seen
from citadel_proxy.circuit import Circuit
from citadel_proxy.errors import reason
from citadel_proxy.ratelimit.bucket import Decision, Limits, decision
from citadel_proxy.ratelimit.local import LocalLimiter

log = logging.getLogger(__name__)

# How long a check may wait for Redis: far above a healthy round trip, far below a request's patience.
CALL_TIMEOUT_S = 0.25

# The same arithmetic as bucket.Bucket; Redis' own clock, so instances with skewed clocks agree.
# KEYS[1]: the identity's hash. ARGV: "acquire" | "charge", rpm, tpm (0: no limit), tokens to charge
# (an acquire carries the tokens its identity still owed, so most requests cost one round trip), request
# slots wanted (acquire), unused slots given back first (any op). Returns the slots granted (0: refused).
SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local rpm, tpm, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local want, back = tonumber(ARGV[5]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')

local function drained(level, at, limit)
  if limit <= 0 or not level then return 0 end
  local left = tonumber(level) - (now - tonumber(at)) * limit / 60000
  if left < 0 then return 0 end
  return left
end

local r = math.max(drained(s[1], s[2], rpm) - back, 0)
local t = drained(s[3], s[4], tpm) + cost
local granted, retry = 0, 0
if ARGV[1] == 'acquire' then
  granted = want
  if rpm > 0 then
    granted = math.min(want, math.floor(rpm - r))
    if granted < 1 then granted = 0; retry = (r + 1 - rpm) * 60000 / rpm end
  end
  if tpm > 0 and t >= tpm then granted = 0; retry = math.max(retry, (t - tpm + 1) * 60000 / tpm) end
  if rpm > 0 then r = r + granted end
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
return {granted, tostring(r), tostring(t), tostring(retry)}
"""

# A lease is about this share of the identity's limit, and never more than MAX_LEASE slots, unless it is
# renewed at the rate it is used (`paced_lease_size`), which takes up to MAX_PACED_LEASE.
LEASE_SHARE = 50
MAX_LEASE = 64
MAX_PACED_LEASE = 4096
# More slots are asked for once this share of a lease is left (leases of RENEW_SHARE slots or more).
RENEW_SHARE = 4
# The shortest time over which a lease's use is taken as a rate: a burst taking a lease's slots in one
# turn of the loop is not read as an endless rate.
MIN_RATE_SPAN_S = 0.01


def lease_size(limits: Limits, most: int = MAX_LEASE) -> int:
    """Slots to ask for at once: 1 under 100 requests per minute, or without a request limit (a token
    limit alone is checked against Redis' count on every request)."""
    rpm = limits.requests_per_minute
    return max(1, min(most, rpm // LEASE_SHARE)) if rpm else 1


def paced_lease_size(limits: Limits, per_s: float, window_s: float, most: int = MAX_LEASE) -> int:
    """Slots for a renewal: `window_s` of requests at `per_s`, the rate the lease was used at, and never
    fewer than `lease_size` gives, nor more than LEASE_SHARE's share of the limit (or MAX_PACED_LEASE).
    The renewal is asked for with a quarter left, so that quarter lasts window_s / 4 at that rate."""
    least = lease_size(limits, most)
    rpm = limits.requests_per_minute
    if not rpm or most < MAX_LEASE:  # no request limit, or leases kept small on purpose
        return least
    return max(least, min(int(per_s * window_s), rpm // LEASE_SHARE, MAX_PACED_LEASE))


@dataclass(slots=True)
class Lease:
    """Request slots granted by Redis and not yet used, with the levels Redis had after the grant."""

    limits: Limits
    slots: int
    ends_at: float  # time.monotonic()
    requests: float
    tokens: float
    renew_at: int  # slots left when more are asked for ahead (0: not ahead, once it has run out)
    since: float  # time.monotonic() at the grant, or when the last renewal was asked for
    taken: int = 0  # slots used since then: with `since`, the rate the next renewal is sized by

    @classmethod
    def granted(
        cls, limits: Limits, slots: int, now: float, ends_at: float, requests: float, tokens: float
    ) -> Lease:
        return cls(limits, slots, ends_at, requests, tokens, slots // RENEW_SHARE, now)

    def serves(self, limits: Limits, now: float) -> bool:
        # `is` first: the stage hands in the same Limits for a key each time (an == is a tuple each).
        return self.slots > 0 and (self.limits is limits or self.limits == limits) and now < self.ends_at


@dataclass(slots=True)
class RedisLimiter:
    # LeanRedis in the gateway; redis-py's client works too (anything with register_script). The client
    # bounds each call (LeanRedis: reply_timeout_s=CALL_TIMEOUT_S; redis-py: socket_timeout).
    client: Any
    prefix: str
    fallback: LocalLimiter = field(default_factory=LocalLimiter)
    # While one check probes a recovering Redis, others use the fallback for at most this long (the
    # client's call bound, which is what a probe can take).
    probe_s: float = CALL_TIMEOUT_S
    cooldown_s: float = 5.0
    # Tokens charged with charge_soon wait this long for the identity's next acquire to carry them.
    flush_after_s: float = 0.2
    # How long a worker may hold unused slots before they go back to Redis, and how many at most.
    lease_s: float = 1.0
    max_lease: int = MAX_LEASE
    # A renewal asks for this long of requests at the rate the lease was used (paced_lease_size).
    lease_window_s: float = 0.25
    _script: Any = None
    _leases: dict[str, Lease] = field(default_factory=dict)
    # identity -> the limits and the task of its lease request in flight.
    _asking: dict[str, tuple[Limits, asyncio.Task[Decision | bool]]] = field(default_factory=dict)
    # identity -> (limits, tokens owed, when the oldest of them was owed: time.monotonic())
    _owed: dict[str, tuple[Limits, int, float]] = field(default_factory=dict)
    _circuit: Circuit = field(init=False)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    # One timer for all owed charges (not a task and a timer per request).
    _flusher: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        # register_script runs EVALSHA, loading the script only if Redis does not know it yet.
        self._script = self.client.register_script(SCRIPT)
        self._circuit = Circuit(probe_s=self.probe_s, cooldown_s=self.cooldown_s)

    def acquire_now(self, identity: str, limits: Limits) -> Decision | None:
        """A slot of the identity's lease, when it holds one that serves `limits`; else None."""
        lease = self._leases.get(identity)
        if lease is not None:
            # Leases keep time.monotonic(), not the loop's clock: on Python 3.11 each
            # asyncio.get_running_loop() is a getpid() system call, and this runs for every request.
            now = monotonic()
            if lease.serves(limits, now):
                return self._use(identity, lease, now)
        return None

    async def acquire(self, identity: str, limits: Limits) -> Decision:
        want = lease_size(limits, self.max_lease)
        while True:
            lease, now = self._leases.get(identity), monotonic()
            if lease is not None and lease.serves(limits, now):
                return self._use(identity, lease, now)
            asking = self._asking.get(identity)
            if want > 1 and (asking is None or asking[0] == limits):
                # One lease request at a time per identity, in a task of its own: the requests of a
                # burst all wait for it and take their slots from the lease (or share its refusal),
                # and one that is cancelled meanwhile strands no slot. shield: nor cancels the task.
                if asking is None:
                    asking = self._start_asking(identity, limits, want)
                answer = await asyncio.shield(asking[1])
            else:
                # A slot at a time: small limits, or a lease for other limits is on its way.
                answer = await self._ask(identity, limits, 1)
            if answer is False:
                return self.fallback.acquire_now(identity, limits)
            if answer is not True:
                return answer
            # True: the grant is the identity's lease now; the next turn takes this request's slot.

    async def _ask(
        self, identity: str, limits: Limits, want: int, renewing: Lease | None = None
    ) -> Decision | bool:
        """Ask Redis for `want` slots, giving back the identity's ended lease (or adding to `renewing`, a
        lease still in use) and carrying the tokens it owes. Returns the decision for one slot asked
        alone, or a refusal; True when the granted slots are the identity's lease now; False when Redis
        is unavailable (the in-process limiter decides)."""
        try:
            lease = self._leases.get(identity)
            back = self._end_lease(identity, lease) if lease is not None and renewing is None else 0
            owed = self._owed.pop(identity, None)
            cost = owed[1] if owed is not None and limits.tokens_per_minute else 0
            raw = await self._run(identity, "acquire", limits, cost, want, back)
            if raw is None:
                if owed is not None:
                    self.fallback.charge_now(identity, owed[0], owed[1])
                return False
            granted, requests, tokens, retry_ms = int(raw[0]), float(raw[1]), float(raw[2]), float(raw[3])
            if granted < 1 or want == 1:
                return decision(limits, granted >= 1, requests, tokens, retry_ms, "redis")
            # The level counts every granted slot as used: each is counted off as it is taken.
            now = monotonic()
            ends_at = now + self.lease_s
            if renewing is None:
                self._leases[identity] = Lease.granted(limits, granted, now, ends_at, requests, tokens)
            elif self._leases.get(identity) is renewing:
                # The slots still in hand stay, counted in Redis' level already.
                renewing.slots += granted
                renewing.ends_at, renewing.requests, renewing.tokens = ends_at, requests, tokens
                renewing.renew_at = granted // RENEW_SHARE
            else:
                # The lease ended while its renewal was on its way (its slots went back): these go too.
                self._track(self._send(identity, limits, 0, granted))
            self._flush_later()
            return True
        finally:
            if want > 1:
                del self._asking[identity]

    def _start_asking(
        self, identity: str, limits: Limits, want: int, renewing: Lease | None = None
    ) -> tuple[Limits, asyncio.Task[Decision | bool]]:
        """The identity's one lease request in flight (`_ask` in a task of its own), registered."""
        task = asyncio.get_running_loop().create_task(self._ask(identity, limits, want, renewing))
        task.add_done_callback(mark_seen)
        asking = self._asking[identity] = (limits, task)
        return asking

    def _use(self, identity: str, lease: Lease, now: float) -> Decision:
        lease.slots -= 1
        lease.taken += 1
        if lease.slots < lease.renew_at and identity not in self._asking:
            # Asked for ahead: `acquire`'s callers that find the lease run out wait for this request.
            lease.renew_at = 0
            per_s = lease.taken / max(now - lease.since, MIN_RATE_SPAN_S)
            lease.since, lease.taken = now, 0
            want = paced_lease_size(lease.limits, per_s, self.lease_window_s, self.max_lease)
            self._start_asking(identity, lease.limits, want, lease)
        return decision(lease.limits, True, lease.requests - lease.slots, lease.tokens, 0, "redis")

    def _note_tokens(self, identity: str, tokens: int) -> None:
        """This worker's own token charges count against its lease at once: the lease ends when they
        reach the token limit, so the next check asks Redis (which has every worker's charges)."""
        lease = self._leases.get(identity)
        if lease is None:
            return
        lease.tokens += tokens
        tpm = lease.limits.tokens_per_minute
        if tpm and lease.tokens >= tpm:
            lease.ends_at = 0.0  # ended: the next check asks Redis, and gives the unused slots back

    def _end_lease(self, identity: str, lease: Lease) -> int:
        """Forget the lease; its unused slots are to be given back to Redis with the next call."""
        del self._leases[identity]
        return lease.slots

    async def charge(self, identity: str, limits: Limits, tokens: int) -> None:
        if tokens <= 0 or not limits.tokens_per_minute:
            return
        self._note_tokens(identity, tokens)
        await self._send(identity, limits, tokens, 0)

    async def _send(self, identity: str, limits: Limits, tokens: int, back: int) -> None:
        """Charge tokens and/or give back unused slots."""
        if await self._run(identity, "charge", limits, tokens, 0, back) is None and tokens > 0:
            self.fallback.charge_now(identity, limits, tokens)

    def charge_soon(self, identity: str, limits: Limits, tokens: int) -> None:
        """Charge without waiting (from code that must not await, such as a stream's read).

        The tokens ride on the identity's next acquire when one comes within `flush_after_s`, else a
        charge of their own is sent: a busy key costs one Redis round trip per request, not two.
        """
        if tokens <= 0 or not limits.tokens_per_minute:
            return
        self._note_tokens(identity, tokens)
        owed = self._owed.get(identity)
        if owed is not None:
            self._owed[identity] = (limits, owed[1] + tokens, owed[2])
            return
        self._owed[identity] = (limits, tokens, monotonic())
        self._flush_later()

    def _flush_later(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self.flush_after_s, self._flush_due)

    def _flush_due(self) -> None:
        """Send the charges no acquire carried within flush_after_s and give back the slots of leases
        that ended; wait again for the others."""
        self._flusher = None
        self._release(monotonic())
        if self._owed or self._leases:
            self._flusher = asyncio.get_running_loop().call_later(self.flush_after_s, self._flush_due)

    def _release(self, now: float | None) -> None:
        """Start sending what is due at `now` (None: everything): owed tokens and unused lease slots."""
        for identity, lease in list(self._leases.items()):
            # Not ended when merely used up: a renewal on its way adds to it (ending it sent the renewal's
            # slots back and made its waiters ask again), and without one the next acquire ends it.
            if now is None or now >= lease.ends_at:
                back = self._end_lease(identity, lease)
                if back > 0:
                    self._track(self._send(identity, lease.limits, 0, back))
        for identity, (limits, tokens, since) in list(self._owed.items()):
            if now is None or now - since >= self.flush_after_s:
                del self._owed[identity]
                self._track(self._send(identity, limits, tokens, 0))

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        while self._asking:
            # Lease requests in flight install their leases first; then every unused slot goes back.
            await asyncio.gather(*(task for _, task in self._asking.values()), return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self._release(None)
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()

    @property
    def degraded(self) -> bool:
        return self._circuit.open

    async def _run(
        self, identity: str, op: str, limits: Limits, tokens: int, want: int = 0, back: int = 0
    ) -> Any:
        # While a call probes a recovering Redis, concurrent checks keep using the fallback.
        probing = self._circuit.enter()
        if probing is None:
            return None
        args = [op, limits.requests_per_minute or 0, limits.tokens_per_minute or 0, tokens, want, back]
        try:
            result = await self._script(keys=[f"{self.prefix}rl:{identity}"], args=args)
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            self._trip(exc, probing)
            return None
        if probing:
            log.warning("Redis is back; rate limits are shared again")
        self._circuit.succeeded()
        return result

    def _trip(self, exc: Exception, probing: bool) -> None:
        if not probing:
            log.warning(
                "Redis rate limiter unavailable (%s); counting in this process for %.0f s",
                reason(exc),
                self.cooldown_s,
            )
        self._circuit.failed()
