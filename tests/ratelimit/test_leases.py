"""Leases: request slots taken from Redis a few at a time, never more than the shared limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from citadel_proxy.ratelimit.bucket import Limits
from citadel_proxy.ratelimit.shared import (
    LEASE_SHARE,
    MAX_LEASE,
    MAX_PACED_LEASE,
    RENEW_SHARE,
    RedisLimiter,
    lease_size,
    paced_lease_size,
)
from citadel_proxy.redis_lean import LeanRedis


class Counted:
    """The client, counting the script calls that reach Redis."""

    def __init__(self, client: LeanRedis) -> None:
        self.client = client
        self.calls = 0
        self.asked = asyncio.Event()
        self.wanted: list[object] = []  # the slots each acquire asked for
        # While set to an unset event, calls wait for it before they reach Redis (a slow answer).
        self.gate: asyncio.Event | None = None

    def register_script(self, source: str) -> Any:
        script = self.client.register_script(source)

        async def call(keys: list[str], args: list[object]) -> Any:
            self.calls += 1
            self.asked.set()
            if args[0] == "acquire":
                self.wanted.append(args[4])
            if self.gate is not None:
                await self.gate.wait()
            return await script(keys=keys, args=args)

        return call


async def use_until_renewed(
    limiter: RedisLimiter, identity: str, limits: Limits, pause_s: float = 0.0
) -> None:
    """Take slots of the identity's lease (one each `pause_s`) until its renewal is asked for."""
    while identity not in limiter._asking:
        if pause_s:
            await asyncio.sleep(pause_s)
        assert limiter.acquire_now(identity, limits) is not None


@contextlib.asynccontextmanager
async def counting(
    client: LeanRedis, prefix: str, **settings: Any
) -> AsyncIterator[tuple[Counted, RedisLimiter]]:
    """A limiter whose Redis calls are counted; closed on leaving, which gives its held slots back."""
    counted = Counted(client)
    limiter = RedisLimiter(counted, prefix, **settings)
    try:
        yield counted, limiter
    finally:
        await limiter.aclose()


def test_lease_sizes() -> None:
    assert lease_size(Limits(99)) == 1  # small limits: every request asks Redis
    assert lease_size(Limits(600)) == 12
    assert lease_size(Limits(10**9)) == MAX_LEASE
    assert lease_size(Limits(None, 10**9)) == 1  # a token limit alone is checked every time
    assert lease_size(Limits(600), most=1) == 1


def test_paced_lease_sizes() -> None:
    """A renewal covers the window at the rate the lease was used, within 2% of the limit."""
    big = Limits(10**9)
    assert paced_lease_size(big, per_s=4000, window_s=0.25) == 1000
    assert paced_lease_size(big, per_s=10**7, window_s=0.25) == MAX_PACED_LEASE
    assert paced_lease_size(big, per_s=10, window_s=0.25) == MAX_LEASE  # never less than a first lease
    assert paced_lease_size(Limits(6400), per_s=4000, window_s=0.25) == 6400 // LEASE_SHARE
    assert paced_lease_size(Limits(600), per_s=4000, window_s=0.25) == 12
    assert paced_lease_size(Limits(None, 10**9), per_s=4000, window_s=0.25) == 1
    assert paced_lease_size(big, per_s=4000, window_s=0.25, most=4) == 4  # leases kept small stay so


async def test_a_lease_serves_many_requests_with_one_round_trip(client: LeanRedis, redis_prefix: str) -> None:
    async with counting(client, redis_prefix) as (counted, limiter):
        decisions = [await limiter.acquire("key:l", Limits(6400)) for _ in range(100)]
        assert all(d.allowed and d.backend == "redis" for d in decisions)
        assert counted.calls == 2  # 64 slots, then 64 more
        # The headers count down as if every request had asked Redis.
        remaining = [d.requests.remaining for d in decisions if d.requests]
        assert remaining[:3] == [6399, 6398, 6397] and remaining[-1] <= 6300


async def test_a_burst_waits_for_the_lease_in_flight_instead_of_asking_redis_each(
    client: LeanRedis, redis_prefix: str
) -> None:
    async with counting(client, redis_prefix) as (counted, limiter):
        decisions = await asyncio.gather(*(limiter.acquire("key:b", Limits(6400)) for _ in range(100)))
        assert all(d.allowed and d.backend == "redis" for d in decisions)
        assert counted.calls == 2  # the first asks for 64 slots; the 99 others wait and use them, then 64


async def test_a_cancelled_lease_request_strands_no_slot(client: LeanRedis, redis_prefix: str) -> None:
    async with counting(client, redis_prefix) as (counted, limiter):
        asker = asyncio.ensure_future(limiter.acquire("key:c", Limits(6400)))
        await counted.asked.wait()  # the lease request is on its way to Redis
        asker.cancel()
        after = await limiter.acquire("key:c", Limits(6400))
        assert after.allowed and counted.calls == 1  # served from the lease the cancelled one asked for
        assert after.requests is not None and after.requests.remaining == 6399


async def test_a_burst_over_the_limit_shares_the_refusal(client: LeanRedis, redis_prefix: str) -> None:
    limits = Limits(200)  # leases of 4 slots
    async with counting(client, redis_prefix, max_lease=4) as (counted, limiter):
        first = await asyncio.gather(*(limiter.acquire("key:r", limits) for _ in range(200)))
        assert sum(d.allowed for d in first) == 200
        # A renewal asked for ahead near the end may still be on its way: it is refused too.
        await asyncio.gather(*(task for _, task in limiter._asking.values()))
        calls = counted.calls
        refused = await asyncio.gather(*(limiter.acquire("key:r", limits) for _ in range(30)))
        assert not any(d.allowed for d in refused)
        assert all(d.retry_after_s > 0 for d in refused)
        assert counted.calls == calls + 1  # one round trip refused the whole burst


async def test_workers_never_admit_more_than_the_limit_together(client: LeanRedis, redis_prefix: str) -> None:
    workers = [RedisLimiter(client, redis_prefix) for _ in range(3)]  # leases of 2 slots at 100/min
    limits = Limits(100)
    try:
        results = await asyncio.gather(*(workers[i % 3].acquire("key:w", limits) for i in range(150)))
        admitted = sum(d.allowed for d in results)
        # Never over; under by at most the slots the other workers still hold.
        assert 100 - 2 * len(workers) <= admitted <= 100
    finally:
        for worker in workers:
            await worker.aclose()


async def test_unused_slots_go_back_when_the_lease_ends(client: LeanRedis, redis_prefix: str) -> None:
    holder = RedisLimiter(client, redis_prefix, lease_s=0.05, flush_after_s=0.02)
    other = RedisLimiter(client, redis_prefix, max_lease=1)
    limits = Limits(6400)
    try:
        assert (await holder.acquire("key:u", limits)).allowed  # 64 slots taken, 63 held
        seen = await other.acquire("key:u", limits)
        assert seen.requests is not None and seen.requests.remaining <= 6400 - 65
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not holder._leases and not holder._pending:
                break
        back = await other.acquire("key:u", limits)
        assert back.requests is not None and back.requests.remaining >= 6400 - 4  # 2 used (+ drain)
    finally:
        await holder.aclose()
        await other.aclose()


async def test_own_token_charges_end_a_lease_at_the_token_limit(client: LeanRedis, redis_prefix: str) -> None:
    limits = Limits(6400, 1000)
    async with counting(client, redis_prefix, flush_after_s=60) as (counted, limiter):
        assert (await limiter.acquire("key:t", limits)).allowed
        calls = counted.calls
        limiter.charge_soon("key:t", limits, 600)
        second = await limiter.acquire("key:t", limits)  # from the lease, which saw the 600 tokens
        assert second.allowed and counted.calls == calls
        assert second.tokens is not None and second.tokens.remaining == 400
        limiter.charge_soon("key:t", limits, 500)  # 1100 >= 1000: the lease ends
        third = await limiter.acquire("key:t", limits)
        assert not third.allowed and counted.calls == calls + 1  # Redis decided, with the owed tokens


async def test_shutdown_gives_held_slots_back(client: LeanRedis, redis_prefix: str) -> None:
    holder = RedisLimiter(client, redis_prefix)
    other = RedisLimiter(client, redis_prefix, max_lease=1)
    limits = Limits(6400)
    await holder.acquire("key:s", limits)
    await holder.aclose()  # a worker stopping
    after = await other.acquire("key:s", limits)
    assert after.requests is not None and after.requests.remaining >= 6400 - 3
    await other.aclose()


async def test_a_busy_lease_is_renewed_before_it_runs_out(client: LeanRedis, redis_prefix: str) -> None:
    """Requests keep taking slots while Redis answers: only the very first one waits for it."""
    other = RedisLimiter(client, redis_prefix, max_lease=1)
    limits = Limits(6400)  # leases of 64
    waited = 0
    started = time.monotonic()
    # Leaving closes the limiter: the slots renewed ahead and never used go back.
    async with counting(client, redis_prefix) as (counted, limiter):
        for _ in range(300):
            decision = limiter.acquire_now("key:n", limits)  # as the stage asks: at once, else wait
            if decision is None:
                waited += 1
                decision = await limiter.acquire("key:n", limits)
            assert decision.allowed
            # Redis answers a renewal while the request is served (not timed here: awaited, so that no
            # load on the machine makes the next request find the lease run out first).
            renewal = limiter._asking.get("key:n")
            if renewal is not None:
                await renewal[1]
        assert waited == 1
        # Renewals, each adding to the slots in hand: of up to 2% of the limit (128), used this fast.
        most_per_call, least_per_call = 6400 // LEASE_SHARE, MAX_LEASE - MAX_LEASE // RENEW_SHARE
        assert 300 // most_per_call <= counted.calls <= 300 // least_per_call + 2
    after = await other.acquire("key:n", limits)
    # Every slot granted and not used is back: 300 used, and this one, less what drained meanwhile.
    drained = (time.monotonic() - started) * 6400 / 60
    assert after.requests is not None
    assert 6400 - 301 <= after.requests.remaining <= 6400 - 301 + drained + 1
    await other.aclose()


async def test_a_renewal_that_finds_its_lease_ended_gives_its_slots_back(
    client: LeanRedis, redis_prefix: str
) -> None:
    other = RedisLimiter(client, redis_prefix, max_lease=1)
    limits = Limits(6400)
    async with counting(client, redis_prefix) as (_, limiter):
        assert (await limiter.acquire("key:e", limits)).allowed
        await use_until_renewed(limiter, "key:e", limits)
        limiter._release(None)  # the lease ends (a flush of ended leases) while the renewal is out
        await asyncio.gather(*(task for _, task in limiter._asking.values()))
        assert not limiter._leases
        await limiter.drain()
    used = 1 + MAX_LEASE - MAX_LEASE // RENEW_SHARE
    after = await other.acquire("key:e", limits)
    assert after.requests is not None and 6400 - used - 1 <= after.requests.remaining <= 6400 - used + 5
    await other.aclose()


async def test_a_lease_used_fast_is_renewed_with_more_slots(client: LeanRedis, redis_prefix: str) -> None:
    """At thousands of requests a second a quarter of 64 slots lasts less than a loaded loop takes to
    hear from Redis: the renewal asks for a quarter second at the rate the lease was used."""
    limits = Limits(10**6)  # 2% of it: 20,000 slots, more than a paced lease takes
    async with counting(client, redis_prefix) as (counted, limiter):
        assert (await limiter.acquire("key:f", limits)).allowed
        await use_until_renewed(limiter, "key:f", limits)  # as fast as this loop can: far over 256 a second
        await limiter._asking["key:f"][1]
        assert counted.wanted[0] == MAX_LEASE
        assert MAX_LEASE < counted.wanted[1] <= MAX_PACED_LEASE
        lease = limiter._leases["key:f"]
        assert lease.slots == counted.wanted[1] + MAX_LEASE // RENEW_SHARE - 1


async def test_a_lease_used_slowly_is_renewed_at_its_size(client: LeanRedis, redis_prefix: str) -> None:
    limits = Limits(10**6)
    async with counting(client, redis_prefix) as (counted, limiter):
        assert (await limiter.acquire("key:o", limits)).allowed
        await use_until_renewed(limiter, "key:o", limits, pause_s=0.005)  # at most 200 a second
        await limiter._asking["key:o"][1]
        assert counted.wanted == [MAX_LEASE, MAX_LEASE]


async def test_a_used_up_lease_stays_while_its_renewal_is_on_the_way(
    client: LeanRedis, redis_prefix: str
) -> None:
    """The ended-lease flush leaves it: the renewal's slots serve the requests waiting for it, rather
    than going back to Redis while those requests ask again."""
    limits = Limits(6400)
    gate = asyncio.Event()  # the renewal waits for this before it reaches Redis
    async with counting(client, redis_prefix) as (counted, limiter):
        try:
            assert (await limiter.acquire("key:g", limits)).allowed
            counted.gate = gate
            while limiter.acquire_now("key:g", limits) is not None:
                pass
            assert "key:g" in limiter._asking and limiter._leases["key:g"].slots == 0
            await asyncio.sleep(0)
            assert counted.calls == 2  # the first lease, and its renewal held at the gate
            limiter._release(asyncio.get_running_loop().time())  # the flush's turn comes meanwhile
            assert "key:g" in limiter._leases
            waiting = asyncio.gather(*(limiter.acquire("key:g", limits) for _ in range(10)))
            await asyncio.sleep(0)
            gate.set()
            assert all(d.allowed for d in await waiting)
            assert counted.calls == 2  # no slot sent back, nobody asked again
        finally:
            gate.set()  # closing the limiter waits for the renewal


async def test_paced_leases_never_admit_more_than_the_limit_together(
    client: LeanRedis, redis_prefix: str
) -> None:
    """Workers whose leases grow with their rate still share one limit: never over, and under it by at
    most what their leases hold (2% of the limit each, here 256 slots)."""
    counted = [Counted(client) for _ in range(3)]
    workers = [RedisLimiter(c, redis_prefix) for c in counted]
    limits = Limits(12_800)
    started = time.monotonic()
    try:
        results = []
        for _ in range(14):  # bursts of 1,000, as fast as the workers take them
            results += await asyncio.gather(*(workers[i % 3].acquire("key:p", limits) for i in range(1000)))
        admitted = sum(d.allowed for d in results)
        drained = (time.monotonic() - started) * 12_800 / 60
        assert admitted <= 12_800 + drained + 1
        assert admitted >= 12_800 - 3 * 2 * (12_800 // LEASE_SHARE)
        wanted = [want for c in counted for want in c.wanted]
        assert max(wanted) == 12_800 // LEASE_SHARE  # renewals grew to their cap
    finally:
        for worker in workers:
            await worker.aclose()
