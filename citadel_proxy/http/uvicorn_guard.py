"""uvicorn's httptools protocol with the head limits it lacks (http.head_limits): size, lines, time.

httptools keeps an unfinished header in memory however long it grows (50 connections each sending an
unfinished 8 MiB header took a worker from 77 to 525 MiB), and uvicorn starts no timer before a
connection's first request, so a client sending a byte a second keeps its connection forever.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from citadel_proxy import errors
from citadel_proxy.http import uvicorn_headers, uvicorn_send
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


# What uvicorn's on_response_complete uses (0.30 to 0.55): the one below does the same, keep-alive aside.
_RESPONSE_COMPLETE = frozenset((
    "server_state", "total_requests", "transport", "is_closing", "_unset_keepalive_if_required", "flow",
    "resume_reading", "pipeline", "pop", "_start_asgi_task", "timeout_keep_alive_task", "loop",
    "call_later", "timeout_keep_alive", "timeout_keep_alive_handler",
))  # fmt: skip
_KEEP_ALIVE_COVERED = set(HttpToolsProtocol.on_response_complete.__code__.co_names) == _RESPONSE_COMPLETE


class GuardedHttpToolsProtocol(LeanHttpToolsProtocol):
    """The limits cost a normal request two attribute checks: the bytes of a head are counted per read
    (not per header callback), its size and lines are added up only when the reads exceed the byte
    limit, and the timer starts only when a read leaves a head unfinished.

    The keep-alive wait (the time a connection may sit idle between requests) is one timer per
    connection rather than uvicorn's one per response: each answer notes when the connection fell idle,
    and a timer that finds it busy, or idle for less than the wait, is not rearmed, or rearmed for what
    is left.
    """

    limits: ClassVar[HeadLimits]
    # Slots: in uvicorn's instance dict these took it past the keys an instance may share with its
    # class (30), and each connection then had a dict of its own (1.5 KiB).
    __slots__ = ("_head_pending", "_head_received", "_head_timer", "_idle_since", "_keep_alive", "_refused")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # True from a connection's start, and again once a request's body is in, until the next
        # request's headers are complete.
        self._head_pending = True
        # Bytes received while the head was pending: a bound on the head's size (an unfinished header
        # never reaches a callback).
        self._head_received = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused: errors.GatewayError | None = None
        # The loop's time when the last answer ended with nothing more to read; None while busy.
        self._idle_since: float | None = None
        self._keep_alive: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            self._keep_alive = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # lingering: read and dropped
        self._idle_since = None
        if not self._head_pending:
            LeanHttpToolsProtocol.data_received(self, data)
            return
        self._head_received += len(data)
        LeanHttpToolsProtocol.data_received(self, data)
        if self._refused is not None or not self._head_pending:
            return
        limits = self.limits
        # The headers parsed so far are checked per read: a read holds at most a few thousand.
        if self._head_received > limits.max_bytes or (
            self.headers is not None and len(self.headers) > limits.max_headers
        ):
            self._refuse(limits.too_large())
        elif self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            # A keep-alive connection's next head, unfinished: timed from now, once the previous
            # response is done (an answer to a timeout must not land inside it).
            self._start_head_timer()

    def on_response_complete(self) -> None:
        if not _KEEP_ALIVE_COVERED or self.pipeline or self.transport.is_closing():
            super().on_response_complete()
            return
        # uvicorn's, with the keep-alive wait below in place of its timer.
        self.server_state.total_requests += 1
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        self._idle_since = self.loop.time()
        if self._keep_alive is None:
            self._keep_alive = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self._keep_alive = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # busy: the next answer arms it again
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._keep_alive = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        if self._head_timer is not None:
            self._stop_head_timer()
        limits = self.limits
        if len(self.headers) > limits.max_headers or (
            self._head_received > limits.max_bytes and self._head_size() > limits.max_bytes
        ):
            self._refused = limits.too_large()
            raise _HeadRefused
        self._head_received = 0
        LeanHttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        LeanHttpToolsProtocol.on_message_complete(self)
        self._head_pending = True

    def _head_size(self) -> int:
        """The request line and headers as parsed (the reads may also have carried the body)."""
        lines = sum(len(name) + len(value) for name, value in self.headers)
        return REQUEST_LINE_OVERHEAD + len(self.url) + lines + HEADER_LINE_OVERHEAD * len(self.headers)

    def send_400_response(self, msg: str) -> None:
        self._release_head()
        if self._refused is not None:
            self._refuse(self._refused)
            return
        super().send_400_response(msg)

    def _release_head(self) -> None:
        # A pipelined request refused while the answer before it holds its head back: the head goes
        # first (http.uvicorn_send).
        if isinstance(self.cycle, uvicorn_send.OnePassCycle):
            self.cycle.release()

    def _refuse(self, error: errors.GatewayError) -> None:
        self._refused = error
        self._stop_head_timer()
        self._release_head()
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
    uvicorn_headers.install()  # response header names checked once each (http.uvicorn_headers)
    uvicorn_send.install()  # response heads written in one pass (http.uvicorn_send)

    class CitadelHttpToolsProtocol(GuardedHttpToolsProtocol):
        pass

    CitadelHttpToolsProtocol.limits = limits
    return CitadelHttpToolsProtocol
