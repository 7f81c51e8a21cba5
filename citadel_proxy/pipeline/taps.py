"""Stages that only watch a stream (audit, metrics, rate limit) tap it rather than wrap it.

A wrapper per stage costs an open stream one coroutine per stage for every read it waits in (each
wrapper's `read` awaits the next one's), for as long as the stream is open. Taps share one wrapper and
one coroutine: the wrapper reads, then hands the batch, the end or the failure to each tap in turn.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from citadel_proxy.pipeline.types import Delta, Reply, TokenStream


class StreamTap(Protocol):
    """What a watching stage does with a stream. Called only after the inner read returned, so a read
    cancelled while it waits loses nothing; none of them is called per delta."""

    def seen(self, batch: list[Delta]) -> None:
        """A batch passed by."""

    def ended(self, error: Exception | None) -> Awaitable[None] | None:
        """The stream ended (`error` None) or a read failed (not a cancellation): something to wait
        for before the end or the error goes on, or None (most of the time)."""

    def closed(self) -> None:
        """The stream was closed (after its end, or early by a client gone): once per stream."""


class TappedStream:
    """The inner stream, its batches shown to the taps in the order they were added (the innermost
    stage's first, as nested wrappers would see them). Reads after the end or a failure return None."""

    __slots__ = ("_closed", "_ended", "_inner", "_taps")

    def __init__(self, inner: TokenStream, tap: StreamTap) -> None:
        self._inner = inner
        # A tuple: a list would cost more (its items apart, and room to grow).
        self._taps: tuple[StreamTap, ...] = (tap,)
        self._ended = self._closed = False

    async def read(self) -> list[Delta] | None:
        if self._ended:
            return None
        try:
            batch = await self._inner.read()
        except Exception as exc:
            # (Not CancelledError: a timer around read, chunking's, cancels it with nothing lost.)
            self._ended = True
            await self._end(exc)
            raise
        if batch is None:
            # _ended first: if this read is cancelled while a tap waits, the next read still ends.
            self._ended = True
            await self._end(None)
            return None
        for tap in self._taps:
            tap.seen(batch)
        return batch

    async def _end(self, error: Exception | None) -> None:
        for tap in self._taps:
            waiter = tap.ended(error)
            if waiter is not None:
                await waiter

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._closed:
                self._closed = True
                self._tell_closed(0)

    def _tell_closed(self, start: int) -> None:
        # Every tap is told even when one before it raised, as nested wrappers' `finally`s would.
        taps = self._taps
        for i in range(start, len(taps)):
            try:
                taps[i].closed()
            except BaseException:
                self._tell_closed(i + 1)
                raise


def tap(reply: Reply, watcher: StreamTap) -> None:
    """Show `reply`'s stream to `watcher`: added to the stream's taps when the stream is already tapped
    (its outermost wrapper), else in a new TappedStream around it."""
    stream = reply.stream
    assert stream is not None
    if type(stream) is TappedStream:
        stream._taps = (*stream._taps, watcher)
    else:
        reply.stream = TappedStream(stream, watcher)
