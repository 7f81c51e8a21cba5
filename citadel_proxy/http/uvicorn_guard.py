"""uvicorn's httptools protocol with the head limits it lacks (http.head_limits): size, lines, time.

httptools keeps an unfinished header in memory however long it grows (50 connections each sending an
unfinished 8 MiB header took a worker from 77 to 525 MiB), and uvicorn starts no timer before a
connection's first request, so a client sending a byte a second keeps its connection forever.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from citadel_proxy import errors
from citadel_proxy.http.head_limits import (
    HEADER_LINE_OVERHEAD,
    LINGER_S,
    REQUEST_LINE_OVERHEAD,
    HeadLimits,
    refusal,
)
from citadel_proxy.http.uvicorn_lean import LeanHttpToolsProtocol


class _HeadRefused(Exception):
    """Raised in a parser callback to stop httptools; uvicorn then calls send_400_response."""


class GuardedHttpToolsProtocol(LeanHttpToolsProtocol):
    limits: ClassVar[HeadLimits]
    # Slots: in uvicorn's instance dict these took it past the keys an instance may share with its
    # class (30), and each connection then had a dict of its own (1.5 KiB).
    __slots__ = (
        "_head_parsed",
        "_head_pending",
        "_head_received",
        "_head_timer",
        "_header_lines",
        "_refused",
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # True from a connection's start, and again once a request's body is in, until the next
        # request's headers are complete.
        self._head_pending = True
        # Bytes received while the head was pending (an unfinished header never reaches a callback).
        self._head_received = 0
        # The request line and headers as the parser reported them, and how many header lines.
        self._head_parsed = 0
        self._header_lines = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused: errors.GatewayError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # lingering: read and dropped
        if self._head_pending:
            # A keep-alive connection's next request: its headers are timed from their first byte,
            # once the previous response is done (an answer to a timeout must not land inside it).
            if self.cycle is None or self.cycle.response_complete:
                self._start_head_timer()
            self._head_received += len(data)
        super().data_received(data)
        if self._refused is None and self._head_pending and self._head_received > self.limits.max_bytes:
            self._refuse(self.limits.too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_parsed = REQUEST_LINE_OVERHEAD
        self._header_lines = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + HEADER_LINE_OVERHEAD, 1)
        super().on_header(name, value)

    def _count(self, head_bytes: int, lines: int) -> None:
        self._head_parsed += head_bytes
        self._header_lines += lines
        if self.limits.exceeded(self._head_parsed, self._header_lines):
            self._refused = self.limits.too_large()
            raise _HeadRefused

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_received = 0
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True

    def send_400_response(self, msg: str) -> None:
        if self._refused is not None:
            self._refuse(self._refused)
            return
        super().send_400_response(msg)

    def _refuse(self, error: errors.GatewayError) -> None:
        self._refused = error
        self._stop_head_timer()
        self.transport.write(refusal(error))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Half-close and keep reading (data_received drops it) so the client reads the answer.
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_received:
            self._refused = self.limits.too_slow()
            self.transport.write(refusal(self._refused))
        # A connection that never sent a byte gets no answer, as at the end of a keep-alive wait.
        self.transport.close()


def guarded_httptools(limits: HeadLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""

    class CitadelHttpToolsProtocol(GuardedHttpToolsProtocol):
        pass

    CitadelHttpToolsProtocol.limits = limits
    return CitadelHttpToolsProtocol
