"""Stages that only watch a stream (audit, metrics, rate limit) tap it rather than wrap it.

A wrapper per stage costs an open stream one coroutine per stage for every read it waits in (each
wrapper's `read` awaits the next one's), for as long as the stream is open. Taps share one wrapper and
one coroutine: the wrapper reads, then hands the batch, the end or the failure to each tap in turn.
A tap that needs only how many deltas went by and when the first did (metrics, the rate limit's charge)
reads them from the wrapper, which counts them for all, and is not called per batch (`batches=False`):
a voice stream is a batch per token.
"""

from __future__ import annotations

import time
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

    __slots__ = ("_closed", "_ended", "_inner", "_taps", "_watchers", "deltas", "first_at")

    def __init__(self, inner: TokenStream) -> None:
        self._inner = inner
        # Tuples: a list would cost more (its items apart, and room to grow).
        self._taps: tuple[StreamTap, ...] = ()  # told of the end and the close
        self._watchers: tuple[StreamTap, ...] = ()  # shown every batch too
        self._ended = self._closed = False
        self.deltas = 0  # deltas read so far
        self.first_at: float | None = None  # when the first non-empty batch was read (perf_counter)

    def add(self, watcher: StreamTap, *, batches: bool = True) -> None:
        """`batches=False`: `watcher.seen` is never called (it reads `deltas` and `first_at`)."""
        self._taps = (*self._taps, watcher)
        if batches:
            self._watchers = (*self._watchers, watcher)

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
        if batch:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            self.deltas += len(batch)
        for tap in self._watchers:
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
                try:
                    self._tell_closed(0)
                finally:
                    # A counting tap refers to this wrapper (it reads the counts when told of the close):
                    # let go of the taps, so that a closed stream is freed at once, not at the next
                    # collection of the generation that long-lived objects reach.
                    self._taps = self._watchers = ()

    def _tell_closed(self, start: int) -> None:
        # Every tap is told even when one before it raised, as nested wrappers' `finally`s would.
        taps = self._taps
        for i in range(start, len(taps)):
            try:
                taps[i].closed()
            except BaseException:
                self._tell_closed(i + 1)
                raise


def tapped(reply: Reply) -> TappedStream:
    """`reply`'s stream as a TappedStream: itself when it is one already (the outermost wrapper), else a
    new one around it, put in its place."""
    stream = reply.stream
    assert stream is not None
    if type(stream) is TappedStream:
        return stream
    reply.stream = wrapper = TappedStream(stream)
    return wrapper


def tap(reply: Reply, watcher: StreamTap) -> None:
    """Show `reply`'s stream, every batch of it, to `watcher`."""
    tapped(reply).add(watcher)
