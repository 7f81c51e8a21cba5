"""Watching for the client to leave under uvicorn: callbacks on the request cycle's event, no task."""

from __future__ import annotations

import asyncio
from typing import Any

from citadel_proxy.http.disconnect import watch_disconnect
from citadel_proxy.http.uvicorn_lean import LightEvent


class _Flow:
    def __init__(self) -> None:
        self.resumed = 0

    def resume_reading(self) -> None:
        self.resumed += 1


class _Cycle:
    """The fields of uvicorn's RequestResponseCycle that its receive() reads."""

    def __init__(self) -> None:
        self.message_event = LightEvent()
        self.waiting_for_100_continue = False
        self.disconnected = False
        self.response_complete = False
        self.flow = _Flow()
        self.body = bytearray()

    async def receive(self) -> dict[str, Any]:
        raise AssertionError("the watch reads the cycle, it does not receive")


async def _held() -> None:
    await asyncio.sleep(60)


async def test_a_disconnect_cancels_the_task_and_is_noted_without_a_task_of_its_own() -> None:
    cycle, gone = _Cycle(), asyncio.Event()
    task = asyncio.create_task(_held())
    tasks = len(asyncio.all_tasks())
    watch = watch_disconnect(cycle.receive, task, gone.set)
    assert not isinstance(watch, asyncio.Task) and len(asyncio.all_tasks()) == tasks
    cycle.body += b"late"  # a body message first: dropped, and the watch goes on
    cycle.message_event.set()
    await asyncio.sleep(0)
    assert not gone.is_set() and not task.cancelled() and cycle.body == b""
    cycle.disconnected = True
    cycle.message_event.set()
    await asyncio.gather(task, return_exceptions=True)
    assert gone.is_set() and task.cancelled() and cycle.flow.resumed == 2


async def test_a_stopped_watch_does_nothing_when_the_response_completes() -> None:
    cycle, gone = _Cycle(), asyncio.Event()
    task = asyncio.create_task(_held())
    watch = watch_disconnect(cycle.receive, task, gone.set)
    loop, scheduled = asyncio.get_running_loop(), []
    call_soon = loop.call_soon

    def counted(*args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(args)
        return call_soon(*args, **kwargs)

    loop.call_soon = counted  # type: ignore[method-assign,assignment]
    try:
        watch.cancel()
    finally:
        del loop.call_soon
    # The waiter is cancelled without its callback: nothing is scheduled for a watch that stopped.
    assert scheduled == []
    cycle.response_complete = True
    cycle.message_event.set()
    await asyncio.sleep(0.01)
    assert not gone.is_set() and not task.done()
    task.cancel()


async def test_elsewhere_a_task_watches() -> None:
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    gone = asyncio.Event()
    task = asyncio.create_task(_held())
    watch = watch_disconnect(messages.get, task, gone.set)
    assert isinstance(watch, asyncio.Task)
    await messages.put({"type": "http.disconnect"})
    await asyncio.gather(task, return_exceptions=True)
    assert gone.is_set() and task.cancelled()
