"""Noticing that the client left (the one listener a response runs beside its work), and making it leave."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import Receive, Send

from citadel_proxy.http.uvicorn_lean import LightEvent


class Watch(Protocol):
    def cancel(self) -> object:
        """Stop watching (the response is over)."""


def watch_disconnect(receive: Receive, task: asyncio.Task[Any], on_gone: Callable[[], None]) -> Watch:
    """`cancel_on_disconnect` for as long as `task` answers: under uvicorn (its request cycle with our
    LightEvent), a callback on the cycle's event rather than a task, which an open stream would hold,
    with its coroutine, for as long as it lasts; elsewhere, that task."""
    cycle = getattr(receive, "__self__", None)
    if (
        type(getattr(cycle, "message_event", None)) is LightEvent
        and getattr(cycle, "waiting_for_100_continue", True) is False
        and all(hasattr(cycle, name) for name in _CYCLE_FIELDS)
    ):
        return _CycleWatch(cycle, task, on_gone)
    return asyncio.create_task(cancel_on_disconnect(receive, task, on_gone))


# What _CycleWatch reads of uvicorn's RequestResponseCycle, as its receive() does.
_CYCLE_FIELDS = ("disconnected", "response_complete", "flow", "body")


class _CycleWatch:
    """What uvicorn's receive() does for `cancel_on_disconnect`, in callbacks: wait for the cycle's
    message event, drop a body that came (none does once the body was read), and on a disconnect, or the
    response complete, note it and cancel the task."""

    __slots__ = ("_cycle", "_on_gone", "_stopped", "_task", "_waiter")

    def __init__(self, cycle: Any, task: asyncio.Task[Any], on_gone: Callable[[], None]) -> None:
        self._cycle = cycle
        self._task = task
        self._on_gone = on_gone
        self._stopped = False
        self._waiter: asyncio.Future[bool] | None = None
        self._arm(woken=False)

    def _arm(self, *, woken: bool) -> None:
        cycle = self._cycle
        if cycle.disconnected or cycle.response_complete:
            if woken:
                self._gone()
            else:  # as the task would: on the loop's next turn, not inside the caller
                asyncio.get_running_loop().call_soon(self._gone)
            return
        cycle.flow.resume_reading()
        waiter = self._waiter = cycle.message_event.wait()
        waiter.add_done_callback(self._woke)

    def _woke(self, waiter: asyncio.Future[bool]) -> None:
        if self._stopped or waiter.cancelled():
            return
        self._waiter = None
        cycle = self._cycle
        cycle.message_event.clear()
        if not (cycle.disconnected or cycle.response_complete):
            cycle.body = bytearray()  # a body message, as receive() would hand it over: not one we need
        self._arm(woken=True)

    def _gone(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._on_gone()
            self._task.cancel()

    def cancel(self) -> bool:
        self._stopped = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            # Without its callback first: cancelling a future schedules its callbacks on the loop, and
            # this one would only find the watch stopped.
            waiter.remove_done_callback(self._woke)
            waiter.cancel()  # LightEvent drops it at its next wait or set
        return True


async def cancel_on_disconnect(
    receive: Receive, task: asyncio.Task[object], on_gone: Callable[[], None]
) -> None:
    """Wait for `http.disconnect`, then note it and cancel `task` (its upstream request is closed)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    on_gone()
    task.cancel()


async def drop_connection(send: Send) -> None:
    """Close the client's connection now, without flushing what it has not read.

    ASGI has no message for this. uvicorn's `send` is a method of its request cycle, whose `transport` is
    the connection: it is aborted (a plain close would wait for the client to read the buffered events,
    which a stalled client never does). Other servers close the connection themselves when the app
    returns with its response incomplete, as the caller then does.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
        # Let the server see the connection lost before the app returns, so it does not log an
        # incomplete response as an error.
        await asyncio.sleep(0)
