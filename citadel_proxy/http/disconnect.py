"""Noticing that the client left: the one listener a response runs beside its work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import Receive


async def cancel_on_disconnect(
    receive: Receive, task: asyncio.Task[object], on_gone: Callable[[], None]
) -> None:
    """Wait for `http.disconnect`, then note it and cancel `task` (its upstream request is closed)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    on_gone()
    task.cancel()
