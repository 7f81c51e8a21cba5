"""In-flight accounting: a request holds a slot on its backend from send to last byte, and a backend
never runs more than its `max_concurrent`, across the workers and the gateway instances.

With Redis, slots are leases in a sorted set per backend (member -> expiry), taken by a script that
first drops the expired ones: a gateway that dies frees its slots within `lease_ttl_s`, and the living
renew theirs. Without Redis each worker takes its share, `max_concurrent // workers` (at least one).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from citadel_proxy.circuit import Circuit
from citadel_proxy.fleet.backend import Backend

_log = logging.getLogger("citadel.fleet")
# After Redis fails, slots are the worker's share for this long; then one request tries Redis again.
_COOLDOWN_S = 5.0
_PROBE_S = 2.0

_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""
_COUNT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. ms, '+inf')
"""
_RENEW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i = 1, #ARGV - 1 do redis.call('ZADD', KEYS[1], 'XX', ms + tonumber(ARGV[#ARGV]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[#ARGV]) * 2)
return 1
"""


class Slots(Protocol):
    async def take(self, backend: Backend) -> object | None:
        """A slot on `backend` (give it back with `give`), or None when the backend is full."""
        ...

    async def give(self, backend: Backend, slot: object) -> None: ...

    async def everywhere(self, backend: Backend) -> int | None:
        """Requests running on `backend` from every worker and gateway, when that is known."""
        ...


class WorkerSlots:
    """This worker's share of each backend."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    def share(self, backend: Backend) -> int:
        return max(1, backend.max_concurrent // self.workers) if backend.max_concurrent else 0

    async def take(self, backend: Backend) -> object | None:
        share = self.share(backend)
        if share and backend.in_flight >= share:
            return None
        backend.in_flight += 1
        return True

    async def give(self, backend: Backend, slot: object) -> None:
        backend.in_flight -= 1

    async def everywhere(self, backend: Backend) -> int | None:
        return None


class RedisSlots:
    """Leases shared by every worker of every gateway instance; the worker's share when Redis fails."""

    def __init__(self, redis: Redis, prefix: str, ttl_s: float, fallback: WorkerSlots) -> None:
        self._redis, self._prefix, self._ttl_ms = redis, prefix, int(ttl_s * 1000)
        self._fallback = fallback
        # While Redis fails, requests take the worker's share at once instead of each waiting on it.
        self._circuit = Circuit(probe_s=_PROBE_S, cooldown_s=_COOLDOWN_S)
        self._take = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)
        self._count = redis.register_script(_COUNT)
        self._held: dict[str, set[str]] = {}
        self._ids = itertools.count()
        self._me = f"{os.getpid()}-{id(self):x}-{os.urandom(4).hex()}"
        self._task: asyncio.Task[None] | None = None

    def key(self, backend: Backend) -> str:
        return f"{self._prefix}fleet:inflight:{backend.name}"

    async def take(self, backend: Backend) -> object | None:
        if not backend.max_concurrent:
            backend.in_flight += 1
            return True
        lease = f"{self._me}:{next(self._ids)}"
        if self._circuit.enter() is None:
            return await self._local(backend)
        try:
            got = await self._take(
                keys=[self.key(backend)], args=[backend.max_concurrent, self._ttl_ms, lease]
            )
        except (RedisError, OSError) as exc:
            self._circuit.failed()
            _log.warning("fleet slots: Redis failed (%s); using this worker's share", exc)
            return await self._local(backend)
        self._circuit.succeeded()
        if not got:
            return None
        backend.in_flight += 1
        self._held.setdefault(backend.name, set()).add(lease)
        return lease

    async def _local(self, backend: Backend) -> object | None:
        local = await self._fallback.take(backend)
        return None if local is None else ("local", local)

    async def give(self, backend: Backend, slot: object) -> None:
        if isinstance(slot, tuple):
            await self._fallback.give(backend, slot[1])
            return
        backend.in_flight -= 1
        if not isinstance(slot, str):
            return
        self._held.get(backend.name, set()).discard(slot)
        try:
            await self._redis.zrem(self.key(backend), slot)
        except (RedisError, OSError) as exc:
            _log.warning("fleet slots: cannot free a lease (%s); it expires by itself", exc)

    async def everywhere(self, backend: Backend) -> int | None:
        if not backend.max_concurrent:
            return None  # no limit: no leases
        try:
            count: int = await self._count(keys=[self.key(backend)])
        except (RedisError, OSError):
            return None
        return count

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            for name, leases in list(self._held.items()):
                if not leases:
                    continue
                try:
                    await self._renew(
                        keys=[f"{self._prefix}fleet:inflight:{name}"], args=[*leases, self._ttl_ms]
                    )
                except (RedisError, OSError) as exc:
                    _log.warning("fleet slots: cannot renew leases (%s)", exc)
