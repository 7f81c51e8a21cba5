"""uvicorn's httptools protocol with less memory per connection, for many held-open streams.

uvicorn gives every connection a FlowControl and every request an asyncio.Event, and every connection a
deque for pipelined requests. Each asyncio.Event holds a deque, and CPython allocates a deque's first
64-slot block up front: about 0.7 KiB each, three per open stream, for queues that hold at most one
waiter and are mostly empty. Here the connection's flow control and each request's message event are
slotted objects whose waiter list is made only when someone waits, and the pipeline queue is a list.

They replace uvicorn's objects right after uvicorn makes them (before anything waits on them) and offer
the methods uvicorn calls on them (as of uvicorn 0.30 to 0.55). An object uvicorn no longer makes with
the class replaced here, or a FlowControl with methods ours lacks, is left alone; the tests in
tests/core/test_uvicorn_lean.py fail when the replacement stops happening.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class LightEvent:
    """asyncio.Event's interface (set, clear, is_set, wait) with the waiter list made on the first wait.

    wait() hands out a future rather than running a coroutine: a request waiting for its client to leave
    keeps no coroutine frame for it. A waiter cancelled before set() is dropped at the next wait or set.
    Given its loop, it does not look the running loop up for each wait (on Python 3.11 a getpid() call).
    """

    __slots__ = ("_loop", "_value", "_waiters")

    def __init__(self, value: bool = False, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._value = value
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters = self._waiters
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)
            waiters.clear()

    def clear(self) -> None:
        self._value = False

    def wait(self) -> asyncio.Future[bool]:
        waiter: asyncio.Future[bool] = (self._loop or asyncio.get_running_loop()).create_future()
        if self._value:
            waiter.set_result(True)
            return waiter
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        elif waiters:
            waiters[:] = [w for w in waiters if not w.done()]
        waiters.append(waiter)
        return waiter


class LeanFlowControl:
    """uvicorn's FlowControl (pause and resume reading, wait while writing is paused) in slots."""

    __slots__ = ("_transport", "_writable", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable = LightEvent(True)

    async def drain(self) -> None:
        await self._writable.wait()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self._writable.set()


class _Pipeline(list[Any]):
    """The deque operations uvicorn's pipelined-request queue uses (appendleft, pop), on a list."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def _swappable(value: object, kind: type) -> bool:
    # Exactly uvicorn's class: a newer uvicorn that made its own change keeps its object.
    return type(value) is kind


def _covers(ours: type, theirs: type) -> bool:
    return all(hasattr(ours, name) for name in vars(theirs) if not name.startswith("_"))


# A uvicorn whose FlowControl grew a method keeps its own.
_FLOW_COVERED = _covers(LeanFlowControl, FlowControl)


class LeanHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _swappable(self.pipeline, collections.deque) and not self.pipeline:
            self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A new connection: no request cycle holds the flow control yet.
        if _FLOW_COVERED and _swappable(self.flow, FlowControl) and self.cycle is None:
            self.flow = LeanFlowControl(transport)

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        # A new request's cycle: its task has not run yet, so nothing waits on its event.
        if cycle is not None and cycle is not previous and _swappable(cycle.message_event, asyncio.Event):
            cycle.message_event = LightEvent(cycle.message_event.is_set(), self.loop)  # type: ignore[assignment]
