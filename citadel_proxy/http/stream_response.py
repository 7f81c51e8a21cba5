"""The ASGI response that runs a streaming pipeline and writes its events straight to `send`.

Why not Starlette's StreamingResponse: it adds a task group and a disconnect listener per response
(README, Performance); here one listener per stream cancels the work when the client leaves,
so the upstream request is closed and Ollama stops generating.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from starlette.types import Message, Receive, Scope, Send

from citadel_proxy import errors
from citadel_proxy.http.disconnect import drop_connection, watch_disconnect
from citadel_proxy.http.responses import logged_bug
from citadel_proxy.http.stream_encoder import StreamEncoder
from citadel_proxy.pipeline.replay import CompletionStream
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.pipeline.types import CLIENT_CLOSED_STATUS, Context, Reply, TokenStream
from citadel_proxy.timeouts import TimeoutSweeper

_log = logging.getLogger("citadel_proxy.stream")


class StreamResponse:
    """The pipeline's deadline is held by `deadlines` (one sweep for every open stream, not a timer each):
    when it passes, the task is cancelled and the cancellation turned into the deadline's error.

    The same sweep ends a stream whose write to the client has been blocked for `write_timeout_s` (the
    client stopped reading): the upstream request is closed and the client's connection dropped. A
    write in progress is marked by an odd `_writes`, two additions per event rather than a clock read.
    """

    __slots__ = (
        "_client_gone",
        "_deadline",
        "_deadlines",
        "_encoder",
        "_expired",
        "_grace_at",
        "_grace_s",
        "_handler",
        "_headers_sent",
        "_keepalive",
        "_keepalive_s",
        "_on_finish",
        "_send",
        "_stall_mark",
        "_stall_since",
        "_stalled",
        "_stream",
        "_task",
        "_write_timeout_s",
        "_writes",
        "ctx",
    )  # fmt: skip

    def __init__(
        self,
        ctx: Context,
        handler: Handler,
        encoder: StreamEncoder,
        *,
        deadlines: TimeoutSweeper,
        keepalive_s: float,
        header_grace_s: float,
        write_timeout_s: float,
        on_finish: Callable[[Context], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self._handler = handler
        self._encoder = encoder
        self._keepalive_s = keepalive_s
        self._grace_s = header_grace_s
        self._on_finish = on_finish
        self._deadlines = deadlines
        self._headers_sent = False
        self._client_gone = False
        self._stream: TokenStream | None = None
        self._task: asyncio.Task[object] | None = None
        self._deadline = 0.0
        self._expired = False
        self._grace_at: float | None = None
        self._send: Send | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._write_timeout_s = write_timeout_s
        self._writes = 0
        self._stall_mark = 0
        self._stall_since = 0.0
        self._stalled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        watcher = watch_disconnect(receive, task, self._note_gone)
        # Cancellations already asked of the task are someone else's (as asyncio.timeout counts them).
        cancelling = task.cancelling()
        self._deadline = asyncio.get_running_loop().time() + self.ctx.pipeline.timeout_s
        self._deadlines.watch(self)
        try:
            try:
                stream = await self._start(send)
                if not self._headers_sent:
                    await self._send_headers(send)
                # The pump runs in this frame rather than a helper's: every frame on a held stream's path
                # stays alive as long as the stream.
                encode, read = self._encoder.encode, stream.read
                while (batch := await read()) is not None:
                    # Let go of the last tokens and event before waiting again: an idle stream holds neither.
                    data, batch = encode(batch), None
                    if data:
                        self._writes += 1
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                        self._writes += 1
                    data = b""
                trailer = self._encoder.trailer(self.ctx.outcome, self.ctx.include_usage)
                self._writes += 1
                await send({"type": "http.response.body", "body": trailer, "more_body": False})
                self._writes += 1
            finally:
                self._deadlines.unwatch(self)
        except errors.GatewayError as error:
            await self._fail(error, send)
        except Exception as exc:
            # A bug of ours: the client gets an error in its protocol's shape (JSON, or an error event
            # once the stream is open), the traceback goes to the log.
            await self._fail(logged_bug(exc), send)
        except asyncio.CancelledError:
            if self._client_gone:
                task.uncancel()
                self.ctx.outcome.client_gone()
            elif self.ctx.superseded and task.uncancel() <= cancelling:
                await self._fail(errors.Superseded("a newer request of this session replaced this one"), send)
            elif (self._stalled or self._expired) and task.uncancel() <= cancelling:
                if self._stalled:
                    self.ctx.outcome.failed(CLIENT_CLOSED_STATUS, "client_write_timeout")
                    await self._close_upstream()
                    await drop_connection(send)
                else:
                    await self._fail(deadline_error(self.ctx), send)
            else:
                raise
        finally:
            watcher.cancel()
            await self._close_upstream()
            if self._on_finish is not None:
                self._on_finish(self.ctx)

    # timeouts.Watched: the pipeline's deadline, a blocked write, and the header grace while Ollama has
    # not answered

    def due(self, now: float) -> bool:
        grace_at = self._grace_at
        return (
            now >= self._deadline
            or (grace_at is not None and now >= grace_at)
            or (self._writes & 1 == 1 and self._write_blocked(now))
        )

    def _write_blocked(self, now: float) -> bool:
        """True once the same write has been in progress for the write timeout (seen from sweep to sweep)."""
        if self._writes != self._stall_mark:
            self._stall_mark, self._stall_since = self._writes, now
            return False
        return now - self._stall_since >= self._write_timeout_s

    def expire(self) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._deadline and self._writes & 1 == 1 and self._write_blocked(now):
            if self._task is not None and not self._client_gone:
                self._stalled = True
                self._task.cancel()
            return
        if now < self._deadline:
            # The header grace passed: keep the client's connection alive until Ollama answers.
            if self._send is not None and self._keepalive is None:
                self._keepalive = asyncio.create_task(self._keep_alive(self._send))
            self._grace_at = None
            self._deadlines.watch(self)  # the deadline still holds
            return
        if self._task is not None and not self._client_gone:
            self._expired = True
            self._task.cancel()

    def _note_gone(self) -> None:
        self._client_gone = True

    async def _start(self, send: Send) -> TokenStream:
        """Run the pipeline in this task until Ollama answers. If that takes longer than the header grace,
        a helper task opens the stream and keeps it alive meanwhile (Ollama may be loading a model).

        Usually Ollama answers first, and no task, timer or wait set is made for the wait.
        """
        if self._grace_s <= 0:
            self._keepalive = asyncio.create_task(self._keep_alive(send))
        else:
            self._send, self._grace_at = send, asyncio.get_running_loop().time() + self._grace_s
        try:
            # Kept before any other await: if this task is cancelled from here on, the finally of
            # __call__ closes the upstream answer.
            self._stream = _stream_of(await self._handler(self.ctx), self.ctx)
        finally:
            self._grace_at, self._send = None, None
            await self._stop_keep_alive()
        return self._stream

    async def _keep_alive(self, send: Send) -> None:
        await self._send_headers(send)
        keepalive = self._encoder.keepalive
        while keepalive:
            await send({"type": "http.response.body", "body": keepalive, "more_body": True})
            await asyncio.sleep(self._keepalive_s)

    async def _stop_keep_alive(self) -> None:
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is None:
            return
        keepalive.cancel()
        # wait() rather than awaiting the task: a cancellation of this task must not be taken for its.
        await asyncio.wait((keepalive,))
        if not keepalive.cancelled() and keepalive.exception() is not None:
            _log.debug("keep-alive stopped: %r", keepalive.exception())

    async def _send_headers(self, send: Send) -> None:
        headers = self._encoder.headers + _raw_headers(self.ctx.response_headers)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # After the send: a keep-alive helper cancelled while waiting to write has sent nothing.
        self._headers_sent = True
        # Nothing reads them once sent (a later error is an event in the stream): an open stream
        # does not keep them.
        self.ctx.response_headers.clear()

    async def _close_upstream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def _fail(self, error: errors.GatewayError, send: Send) -> None:
        self.ctx.outcome.failed(error.status, error.code)
        if self._client_gone:
            return
        # Ollama is let go before the error is written: a client that does not read must not hold it.
        await self._close_upstream()
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._send_error(error, send)
        except TimeoutError:
            await drop_connection(send)

    async def _send_error(self, error: errors.GatewayError, send: Send) -> None:
        if self._headers_sent:
            message: Message = {"type": "http.response.body", "body": self._encoder.error_event(error)}
            await send(message)
            return
        headers = [(b"content-type", b"application/json")]
        headers += _raw_headers({**self.ctx.response_headers, **error.headers})
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": self._encoder.error_body(error)})


def _raw_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


def deadline_error(ctx: Context) -> errors.DeadlineExceeded:
    pipeline = ctx.pipeline
    return errors.DeadlineExceeded(
        f"the {pipeline.name} pipeline's deadline of {pipeline.timeout_s:g} s passed"
    )


def _stream_of(reply: Reply, ctx: Context) -> TokenStream:
    if reply.stream is not None:
        return reply.stream
    completion = reply.completion
    assert completion is not None
    ctx.outcome.answered(completion)
    return CompletionStream(completion)
