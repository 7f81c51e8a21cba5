"""hypercorn's HTTP/1.1 protocol with the head limits it lacks (http.head_limits): lines and time.

hypercorn bounds an unfinished head (h11_max_incomplete_size, answered 431 with an empty body; here in
JSON), but not the number of header lines, nor a complete head read in one go past the limit, and it
times a head out only with its keep-alive timeout (75 s), so a client sending a byte a second holds a
connection that long. It would also switch to HTTP/2, where none of this applies; here it does not.
hypercorn builds its protocol by name (`hypercorn.protocol.H11Protocol`) and offers no setting for
it: `install` puts this subclass there, in the process that serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

import h11
import hypercorn.protocol
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h11 import H11Protocol

from citadel_proxy import errors
from citadel_proxy.http.head_limits import (
    HEADER_LINE_OVERHEAD,
    LINGER_S,
    REQUEST_LINE_OVERHEAD,
    HeadLimits,
    refusal,
)


class GuardedH11Protocol(H11Protocol):
    limits: ClassVar[HeadLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every event for the connection goes through _send, which can hold back the close to linger.
        self._to_server = self.send
        self.send = self._send
        self._head_deadline: asyncio.Task[None] | None = None
        self._head_received = 0
        self._lingering: asyncio.Task[None] | None = None
        self._refused = False

    async def initiate(self) -> None:
        await super().initiate()
        self._start_head_deadline()

    async def handle(self, event: Event) -> None:
        if isinstance(event, RawData):
            if self._refused:
                return  # lingering: read and dropped
            if self._awaiting_head():
                # A keep-alive connection's next request: its headers are timed from their first byte.
                self._start_head_deadline()
                self._head_received += len(event.data)
        elif isinstance(event, Closed):
            self._stop_head_deadline()
            if self._lingering is not None:
                self._lingering.cancel()
        await super().handle(event)

    def _awaiting_head(self) -> bool:
        return isinstance(self.connection, h11.Connection) and self.connection.their_state is h11.IDLE

    async def _check_protocol(self, event: h11.Request) -> None:
        """No switch to HTTP/2 (prior knowledge or h2c): the limits here are HTTP/1.1's, uvicorn speaks
        HTTP/1.1 only, and so does nginx to the gateway. An h2c upgrade is ignored, as HTTP allows."""
        if event.method == b"PRI" and event.http_version == b"2.0":
            await self._refuse(errors.InvalidRequest("HTTP/2 is not served here: use HTTP/1.1"))

    async def _create_stream(self, request: h11.Request) -> None:
        if self._refused:
            return
        self._stop_head_deadline()
        self._head_received = 0
        head_bytes = REQUEST_LINE_OVERHEAD + len(request.method) + len(request.target)
        head_bytes += sum(len(name) + len(value) + HEADER_LINE_OVERHEAD for name, value in request.headers)
        if self.limits.exceeded(head_bytes, len(request.headers)):
            await self._refuse(self.limits.too_large())
            return
        await super()._create_stream(request)

    async def _send_error_response(self, status_code: int) -> None:
        # h11 says 431 when an unfinished head outgrows h11_max_incomplete_size (= max_header_bytes).
        if status_code != 431:
            await super()._send_error_response(status_code)
            return
        self._refused = True
        self._stop_head_deadline()
        await self._to_server(RawData(data=refusal(self.limits.too_large())))
        # hypercorn sends Closed next: _send turns it into a lingering close.

    async def _refuse(self, error: errors.GatewayError) -> None:
        self._refused = True
        self._stop_head_deadline()
        await self._to_server(RawData(data=refusal(error)))
        await self.send(Closed())

    async def _send(self, event: Event) -> None:
        if isinstance(event, Closed) and self._refused:
            # Keep reading (handle drops it) so the client gets the answer instead of a reset.
            if self._lingering is None:
                self._lingering = asyncio.create_task(self._close_after(LINGER_S))
            return
        await self._to_server(event)

    async def _close_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._to_server(Closed())

    def _start_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = asyncio.create_task(self._head_timed_out())

    def _stop_head_deadline(self) -> None:
        deadline, self._head_deadline = self._head_deadline, None
        if deadline is not None and deadline is not asyncio.current_task():
            deadline.cancel()

    async def _head_timed_out(self) -> None:
        await asyncio.sleep(self.limits.timeout_s)
        self._head_deadline = None
        if self._head_received:
            with contextlib.suppress(ConnectionError):
                await self._to_server(RawData(data=refusal(self.limits.too_slow())))
        # A connection that never sent a byte gets no answer, as at the end of a keep-alive wait.
        await self._to_server(Closed())


def install(limits: HeadLimits) -> None:
    """Makes hypercorn serve HTTP/1.1 through GuardedH11Protocol with `limits`, in this process."""

    class CitadelH11Protocol(GuardedH11Protocol):
        pass

    CitadelH11Protocol.limits = limits
    # ProtocolWrapper looks the name up in this module each time it opens a connection.
    setattr(hypercorn.protocol, "H11Protocol", CitadelH11Protocol)  # noqa: B010
