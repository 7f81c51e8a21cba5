"""One pipelined Redis connection for the command every request sends: the rate limiter's script.

redis-py costs about 60 µs of CPU per command on this path (pool checkout and return, retry wrapper,
script object, connection health checks), which was most of what the rate-limit stage added per request.
Here commands are written the moment they are issued, on one connection per worker, and replies (parsed
by hiredis, the C parser redis-py itself uses) are handed to their callers in order. The cache and the
health probe stay on redis-py: they are not on every request's path.

Errors are redis-py's (`ConnectionError`, `ResponseError`, both `RedisError`), so callers catch one family
whichever client they were given.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from citadel_proxy.background import mark_seen
from citadel_proxy.config.schema import Redis as RedisSettings
from citadel_proxy.timeouts import TimeoutSweeper

Arg = str | bytes | int | float


def _pack(args: tuple[Arg, ...]) -> bytes:
    # hiredis' stub types its argument as a one-element tuple; any length is meant.
    pack: Any = hiredis.pack_command
    return cast(bytes, pack(args))


class _Connection(asyncio.Protocol):
    """Replies are due within `reply_timeout_s` of their command: past that, the sweeper fails every
    waiting caller with TimeoutError and closes the connection (Redis stalled; the next call reconnects).
    One sweep for all commands, instead of a timer around each one."""

    def __init__(self, reply_timeout_s: float, sweeper: TimeoutSweeper) -> None:
        self._loop = asyncio.get_running_loop()
        self._reply_timeout_s = reply_timeout_s
        self._sweeper = sweeper
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        # Callers in the order their commands went out, each with the time it was sent.
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        # Commands issued in one turn of the event loop go out in one write, so under load one syscall
        # (and usually one wake-up for the replies) serves several requests.
        self._unsent: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but offer the same methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._lost(RedisConnectionError(f"Redis sent something that is not RESP: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self._lost(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            waiter, _ = self._waiting.popleft()
            if not self._waiting:
                self._sweeper.unwatch(self)
            if waiter.done():  # its caller gave up (cancelled request): the reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(ResponseError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(RedisConnectionError(f"the connection to Redis was lost: {exc or 'closed by Redis'}"))

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.closed or self._transport is None:
            raise RedisConnectionError("the connection to Redis is closed")
        waiter = self._loop.create_future()
        if not self._waiting:
            self._sweeper.watch(self)
        self._waiting.append((waiter, self._loop.time()))
        self._unsent.append(packed)
        if len(self._unsent) == 1:
            self._loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if not self.closed and self._transport is not None:
            self._transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    # timeouts.Watched: the oldest unanswered command

    def due(self, now: float) -> bool:
        return bool(self._waiting) and now - self._waiting[0][1] > self._reply_timeout_s

    def expire(self) -> None:
        self._lost(TimeoutError(f"Redis did not answer within {self._reply_timeout_s:g} s"))

    def close(self) -> None:
        self._lost(RedisConnectionError("the connection to Redis was closed"))

    def _lost(self, error: Exception) -> None:
        self.closed = True
        self._sweeper.unwatch(self)
        if self._transport is not None:
            self._transport.close()
        while self._waiting:
            waiter, _ = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)


class LeanScript:
    """A Lua script run by its digest (EVALSHA), sent whole (EVAL) only when Redis does not know it yet."""

    def __init__(self, client: LeanRedis, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        try:
            return await self._client.execute("EVALSHA", self._sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._client.execute("EVAL", self._source, len(keys), *keys, *args)


class LeanRedis:
    """Connects on first use and again after the connection is lost or stalls; the commands issued
    while connecting all wait for that one attempt, and share its failure. A reply later than
    `reply_timeout_s` (give or take the sweep's 50 ms) fails its caller with TimeoutError."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        database: int = 0,
        password: str | None = None,
        connect_timeout_s: float = 5.0,
        reply_timeout_s: float = 5.0,
    ) -> None:
        self._host, self._port = host, port
        self._database, self._password = database, password
        self._connect_timeout_s = connect_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._sweeper = TimeoutSweeper(period_s=0.05)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    @classmethod
    def from_settings(cls, settings: RedisSettings, *, reply_timeout_s: float) -> LeanRedis:
        return cls(
            settings.host,
            settings.port,
            database=settings.database,
            password=settings.password,
            # A call's whole wait is bounded by the reply timeout, connecting included.
            connect_timeout_s=min(settings.socket_connect_timeout, reply_timeout_s),
            reply_timeout_s=reply_timeout_s,
        )

    def register_script(self, source: str) -> LeanScript:
        """As redis-py's: the limiter runs on either client."""
        return LeanScript(self, source)

    async def execute(self, *args: Arg) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        return await conn.send(_pack(args))

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._sweeper.close()

    async def _connection(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(mark_seen)
        # shield: a caller that gives up must not cancel the attempt the others wait for.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Connection:
        try:
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._reply_timeout_s, self._sweeper), self._host, self._port
                )
                # Pipelined: both replies come back in one round trip.
                hello = []
                if self._password is not None:
                    hello.append(conn.send(_pack(("AUTH", self._password))))
                if self._database:
                    hello.append(conn.send(_pack(("SELECT", self._database))))
                try:
                    await asyncio.gather(*hello)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
            return conn
        finally:
            self._connecting = None
