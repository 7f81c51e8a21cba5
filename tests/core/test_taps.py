"""Stages that watch a stream share one wrapper (pipeline.taps): what each tap is shown, and in what order."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from citadel_proxy.errors import UpstreamIncomplete
from citadel_proxy.pipeline.taps import TappedStream, tap, tapped
from citadel_proxy.pipeline.types import Delta, Reply


class _Scripted:
    def __init__(self, batches: list[list[Delta]], error: Exception | None = None) -> None:
        self._batches, self._error = batches, error
        self.closed = 0

    async def read(self) -> list[Delta] | None:
        if self._batches:
            return self._batches.pop(0)
        if self._error is not None:
            raise self._error
        return None

    async def aclose(self) -> None:
        self.closed += 1


class _Tap:
    def __init__(self, name: str, log: list[str], wait: bool = False) -> None:
        self.name, self.log, self.wait = name, log, wait

    def seen(self, batch: list[Delta]) -> None:
        self.log.append(f"{self.name} seen {len(batch)}")

    def ended(self, error: Exception | None) -> asyncio.Future[None] | None:
        self.log.append(f"{self.name} ended {type(error).__name__ if error else None}")
        if not self.wait:
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def closed(self) -> None:
        self.log.append(f"{self.name} closed")


async def test_taps_share_one_wrapper_and_see_in_the_order_added() -> None:
    log: list[str] = []
    inner = _Scripted([[Delta("a")], [Delta("b"), Delta("c")]])
    reply = Reply(stream=inner)
    for name in ("inner", "middle", "outer"):
        tap(reply, _Tap(name, log, wait=name == "middle"))
    stream = reply.stream
    assert type(stream) is TappedStream
    assert [await stream.read(), await stream.read()] == [[Delta("a")], [Delta("b"), Delta("c")]]
    assert await stream.read() is None and await stream.read() is None
    await stream.aclose()
    await stream.aclose()
    assert log == [
        "inner seen 1", "middle seen 1", "outer seen 1",
        "inner seen 2", "middle seen 2", "outer seen 2",
        "inner ended None", "middle ended None", "outer ended None",
        "inner closed", "middle closed", "outer closed",
    ]  # fmt: skip
    assert inner.closed == 2


async def test_a_failed_read_is_shown_then_raised() -> None:
    log: list[str] = []
    reply = Reply(stream=_Scripted([], UpstreamIncomplete("cut")))
    tap(reply, _Tap("one", log))
    assert reply.stream is not None
    with pytest.raises(UpstreamIncomplete):
        await reply.stream.read()
    assert await reply.stream.read() is None
    assert log == ["one ended UpstreamIncomplete"]


async def test_every_tap_is_told_of_the_close_when_one_raises() -> None:
    log: list[str] = []

    class _Broken(_Tap):
        def closed(self) -> None:
            super().closed()
            raise RuntimeError("bug")

    reply = Reply(stream=_Scripted([]))
    tap(reply, _Broken("first", log))
    tap(reply, _Tap("second", log))
    assert reply.stream is not None
    with pytest.raises(RuntimeError):
        await reply.stream.aclose()
    assert log == ["first closed", "second closed"]


async def test_a_counting_tap_is_not_shown_batches_and_reads_the_counts_from_the_wrapper() -> None:
    """Metrics and the rate limit's charge need only how many deltas went by and when the first did."""
    log: list[str] = []
    reply = Reply(stream=_Scripted([[], [Delta("a")], [Delta("b"), Delta("c")]]))
    tap(reply, _Tap("watcher", log))
    stream = tapped(reply)
    assert reply.stream is stream  # already tapped: the same wrapper
    stream.add(_Tap("counter", log), batches=False)
    assert stream.deltas == 0 and stream.first_at is None
    assert await stream.read() == []
    assert stream.first_at is None  # an empty batch is not a first token
    while await stream.read() is not None:
        pass
    await stream.aclose()
    assert stream.deltas == 3 and stream.first_at is not None
    assert log == [
        "watcher seen 0", "watcher seen 1", "watcher seen 2",
        "watcher ended None", "counter ended None",
        "watcher closed", "counter closed",
    ]  # fmt: skip


async def test_a_closed_stream_lets_go_of_its_counting_taps_without_the_collector() -> None:
    """A counting tap refers to the wrapper, which refers to the tap: closing must undo that cycle, or every
    finished stream (its context, buffers and answer) waits for a full collection."""

    class _Counting(_Tap):
        def __init__(self, stream: TappedStream, log: list[str]) -> None:
            super().__init__("counting", log)
            self.stream = stream

    log: list[str] = []
    reply = Reply(stream=_Scripted([[Delta("a")]]))
    stream = tapped(reply)
    counting = _Counting(stream, log)
    stream.add(counting, batches=False)
    gone = weakref.ref(counting)
    del counting
    gc.disable()
    try:
        while await stream.read() is not None:
            pass
        await stream.aclose()
        del stream, reply
        assert gone() is None
    finally:
        gc.enable()
    assert log == ["counting ended None", "counting closed"]
