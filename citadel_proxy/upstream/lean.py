"""A small HTTP/1.1 client for Ollama's streamed answers: one C parser (httptools) and one buffer per
stream, where aiohttp keeps about 10 KiB of response, parser and reader objects and several wake-ups per
token. Only POSTs of a JSON body to one host, keep-alive connections reused, reading paused when the
reader falls behind (so a slow client stops the reads from Ollama). Everything else stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import httptools

from citadel_proxy.timeouts import TimeoutSweeper

_HIGH_WATER = 64 * 1024
# Idle keep-alive connections kept for reuse (each holds a socket on both sides); more are closed once
# they have been idle for _SURPLUS_IDLE_S. Not at once: under steady concurrency above this count, a burst
# of answers ending together would close connections that the requests following them then open again,
# a connect each and a reference cycle (protocol and parser) left for the collector.
_MAX_IDLE = 64
_SURPLUS_IDLE_S = 1.0
_TRIM_AT_ONCE = 16


class LeanError(Exception):
    """The connection failed or broke. `stale`: closed before a single byte came back, as a pooled
    keep-alive connection that Ollama had already closed is: the request never reached it. `silent`:
    Ollama sent nothing for longer than the read timeout. `too_large`: the answer passed its cap."""

    def __init__(
        self, message: str, *, stale: bool = False, silent: bool = False, too_large: bool = False
    ) -> None:
        super().__init__(message)
        self.stale = stale
        self.silent = silent
        self.too_large = too_large


class LeanResponse(asyncio.Protocol):
    """One connection and the answer being read on it (the `content` aiohttp callers expect is itself).

    Ollama's silence is timed by the pool's sweeper from `_heard_at`, moved on every arrival.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_closed",
        "_eof",
        "_error",
        "_got_bytes",
        "_head",
        "_heard_at",
        "_keep_alive",
        "_loop",
        "_parser",
        "_paused",
        "_pool",
        "_transport",
        "_waiter",
        "status",
    )  # fmt: skip

    def __init__(self, pool: LeanPool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        # Body pieces as httptools hands them over (fresh bytes each): one token's line is passed on
        # as it came, without being copied into a buffer and out again.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        # Made only while send() waits for Ollama's head: a held stream keeps no spent future.
        self._head: asyncio.Future[None] | None = None
        self._heard_at = 0.0
        self._paused = False
        self._eof = False
        self._error: LeanError | None = None
        self._closed = False
        self._got_bytes = False
        self._keep_alive = False
        self.status = 0

    @property
    def content(self) -> LeanResponse:
        """Itself, where aiohttp's callers read the body (a property: an attribute would be a cycle)."""
        return self

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but offer the same methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"Ollama sent an answer that is not HTTP: {exc}")
            return
        if self._buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._heard_at = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if not self._eof:
            self._fail(f"Ollama closed the connection: {exc or 'end of stream'}", stale=not self._got_bytes)
        # The parser holds this protocol's callbacks: a cycle, which only a full collection frees once it
        # has reached the oldest generation, as a held stream's has. After a burst of streams ended, their
        # connections stayed until the next burst (README, Performance). No bytes come from here on.
        self._parser = self._pool.spent_parser

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        # Read now: httptools forgets it once the message is complete.
        self._keep_alive = self._parser.should_keep_alive()
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        self._eof = True
        self._pool.sweeper.unwatch(self)
        self._wake()

    # what UpstreamStream and the error mapping read

    async def readany(self) -> bytes:
        """What has arrived (b"" at the end). Cancel-safe: a cancelled wait loses nothing."""
        while not self._chunks:
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._heard_at = self._loop.time()  # silence is counted again from now
            self._transport.resume_reading()
        return data

    async def read_all(self, limit: int) -> bytes:
        """The whole answer (a non-streamed one usually arrives in one piece), at most `limit` bytes:
        a longer one raises LeanError(too_large) and the connection is closed, unread."""
        first = await self.readany()
        if not first:
            return b""
        rest = bytearray()
        size = len(first)
        while chunk := await self.readany():
            size += len(chunk)
            if size > limit:
                self.close()
                raise LeanError(f"Ollama's answer is longer than {limit} bytes", too_large=True)
            rest += chunk
        if size > limit:
            self.close()
            raise LeanError(f"Ollama's answer is longer than {limit} bytes", too_large=True)
        return first + rest if rest else first

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes of the whole answer (error bodies)."""
        out = bytearray()
        while len(out) < limit and (chunk := await self.readany()):
            out += chunk
        return bytes(out[:limit])

    def is_eof(self) -> bool:
        return self._eof and not self._chunks

    def close(self) -> None:
        """Drop the connection: Ollama sees the client leave and stops generating."""
        self._pool.sweeper.unwatch(self)
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()
        self._pool.forget(self)

    def release(self) -> None:
        """Back to the pool when the answer was read to its end on a keep-alive connection, else closed."""
        if self._eof and not self._chunks and not self._closed and self._keep_alive:
            self._pool.give_back(self)
        else:
            self.close()

    # internals used by the pool

    async def send(self, request: tuple[bytes, bytes]) -> None:
        """Write the request (head, body) and wait for the status line and headers (bounded by the silence
        timer)."""
        assert self._transport is not None
        # One writev on uvloop, without joining the two.
        self._transport.writelines(request)
        self._heard_at = self._loop.time()
        if self._pool.read_timeout_s is not None:
            self._pool.sweeper.watch(self)
        if self._error is not None:
            raise self._error
        self._head = self._loop.create_future()
        try:
            await self._head
        finally:
            self._head = None

    def reset(self) -> None:
        """Ready for the next request on this connection."""
        self._parser = httptools.HttpResponseParser(self)
        self._eof = False
        self._error = None
        self._got_bytes = False
        self._keep_alive = False
        self.status = 0

    @property
    def heard_at(self) -> float:
        """When Ollama last sent something on this connection (loop time): for an idle one, its last use."""
        return self._heard_at

    @property
    def usable(self) -> bool:
        return not self._closed and self._transport is not None and not self._transport.is_closing()

    def _fail(self, message: str, *, stale: bool = False, silent: bool = False) -> None:
        if self._error is None:
            self._error = LeanError(message, stale=stale, silent=silent)
        self._pool.sweeper.unwatch(self)
        head = self._head
        if head is not None and not head.done():
            head.set_exception(self._error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # timeouts.Watched: Ollama's silence (a paused read is our reader's slowness, not Ollama's)

    def due(self, now: float) -> bool:
        silence = self._pool.read_timeout_s
        return silence is not None and not self._paused and now - self._heard_at > silence

    def expire(self) -> None:
        self._fail(f"Ollama sent nothing for {self._pool.read_timeout_s:g} s", silent=True)
        if self._transport is not None:
            self._transport.close()


class LeanPool:
    """Keep-alive connections to one Ollama, at most `limit` busy at once."""

    def __init__(
        self, host: str, port: int, *, limit: int, connect_timeout_s: float, read_timeout_s: float | None
    ) -> None:
        self._host, self._port = host, port
        self._head = f"Host: {host}:{port}\r\nContent-Type: application/json\r\n".encode()
        self._idle: list[LeanResponse] = []
        self._busy: set[LeanResponse] = set()
        self._trim: asyncio.Handle | None = None
        self._slots = asyncio.Semaphore(limit)
        self._connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        # Every open stream is looked at each sweep: for Ollama's silence limit (an hour by default) a
        # sweep a second is plenty; short limits (tests) are swept at a tenth of their length.
        period_s = 1.0 if read_timeout_s is None else min(1.0, read_timeout_s / 10)
        self.sweeper = TimeoutSweeper(period_s=period_s)
        # What a closed connection keeps in its parser's place: one that calls back nothing.
        self.spent_parser = httptools.HttpResponseParser(object())

    async def post(self, path: str, body: bytes, extra_headers: bytes = b"") -> LeanResponse:
        """Send the request; returns once Ollama's status line and headers are in.

        A pooled connection found stale is retried once on a new one. Other failures raise LeanError,
        or OSError / TimeoutError from connecting.
        """
        # Head and body are written apart: joining them copied the body, a second copy of a large request.
        request = (
            b"POST %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n"
            % (path.encode(), self._head, extra_headers, len(body)),
            body,
        )
        try:
            return await self._attempt(request, reuse=True)
        except LeanError as exc:
            if not exc.stale:
                raise
        return await self._attempt(request, reuse=False)

    async def _attempt(self, request: tuple[bytes, bytes], *, reuse: bool) -> LeanResponse:
        await self._slots.acquire()
        try:
            response = (self._take_idle() if reuse else None) or await self._connect()
        except BaseException:
            self._slots.release()
            raise
        # From here the slot is the response's: close() or give_back() returns it.
        self._busy.add(response)
        try:
            await response.send(request)
        except BaseException:
            response.close()
            raise
        return response

    def give_back(self, response: LeanResponse) -> None:
        if response not in self._busy:
            return
        self._busy.discard(response)
        self._slots.release()
        response.reset()
        self._idle.append(response)
        if len(self._idle) > _MAX_IDLE and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(_SURPLUS_IDLE_S, self._trim_idle)

    def _trim_idle(self) -> None:
        """Close the idle connections past _MAX_IDLE that went unused for _SURPLUS_IDLE_S, oldest first
        (the list is reused from its end)."""
        loop = asyncio.get_running_loop()
        unused_since = loop.time() - _SURPLUS_IDLE_S
        # A few per callback: hundreds closed in one go (after a burst) would hold the loop that long.
        for _ in range(_TRIM_AT_ONCE):
            if len(self._idle) <= _MAX_IDLE or self._idle[0].heard_at > unused_since:
                break
            self._idle.pop(0).close()
        if len(self._idle) <= _MAX_IDLE:
            self._trim = None
        elif self._idle[0].heard_at <= unused_since:
            self._trim = loop.call_soon(self._trim_idle)
        else:
            self._trim = loop.call_later(_SURPLUS_IDLE_S, self._trim_idle)

    def forget(self, response: LeanResponse) -> None:
        if response in self._busy:
            self._busy.discard(response)
            self._slots.release()
        with contextlib.suppress(ValueError):
            self._idle.remove(response)

    async def close(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        for response in [*self._idle, *self._busy]:
            response.close()
        self._idle.clear()
        self.sweeper.close()

    def _take_idle(self) -> LeanResponse | None:
        while self._idle:
            response = self._idle.pop()
            if response.usable:
                return response
        return None

    async def _connect(self) -> LeanResponse:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout_s):
            _, protocol = await loop.create_connection(lambda: LeanResponse(self), self._host, self._port)
        return protocol
