"""Latest wins: with `supersede: true` on a pipeline, a new request of the same key and `X-Session-ID`
cancels the one still running (an IDE's newer keystroke makes the previous completion useless).

The cancelled request's task unwinds as on a client disconnect, so its upstream connection is closed
and Ollama stops generating; it answers 409 `superseded`. Per worker, like the queues: two requests of
one session on different workers do not see each other.
"""

from __future__ import annotations

import asyncio

from citadel_proxy.pipeline.types import Context

SESSION_HEADER = "x-session-id"
# Sessions remembered per worker; past it, new sessions are not tracked (they are not superseded).
_MAX_SESSIONS = 100_000


class Sessions:
    def __init__(self) -> None:
        self._running: dict[tuple[str, str, str], tuple[asyncio.Task[object], Context]] = {}

    def claim(self, ctx: Context) -> None:
        """This request is now its session's latest: the one before it, if still running, is cancelled."""
        if not ctx.pipeline.supersede:
            return
        session = ctx.headers.get(SESSION_HEADER)
        task = asyncio.current_task()
        if not session or task is None:
            return
        who = ctx.principal.name if ctx.principal is not None else ctx.client
        key = (ctx.pipeline.name, who, session)
        before = self._running.get(key)
        if before is not None and before[0] is not task and not before[0].done():
            before[1].superseded = True
            before[0].cancel()
        elif before is None and len(self._running) >= _MAX_SESSIONS:
            return
        self._running[key] = (task, ctx)

        def done(finished: asyncio.Task[object]) -> None:
            if self._running.get(key, (None,))[0] is finished:
                del self._running[key]

        task.add_done_callback(done)
