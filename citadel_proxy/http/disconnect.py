"""Noticing that the client left (the one listener a response runs beside its work), and making it leave."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import Receive, Send


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
