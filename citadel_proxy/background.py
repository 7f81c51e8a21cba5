"""Small helpers for tasks that run beside the request that started them."""

from __future__ import annotations

import asyncio
from typing import Any


def mark_seen(task: asyncio.Future[Any]) -> None:
    """A done-callback: the task's error was handled where it was awaited, or deliberately nowhere
    (its waiters gave up); either way it is not logged as 'never retrieved'."""
    if not task.cancelled():
        task.exception()
