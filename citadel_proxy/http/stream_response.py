"""The ASGI response that runs a streaming pipeline and writes its events straight to `send`.

Why not Starlette's StreamingResponse: it adds a task group and a disconnect listener per response
(shared/PERFORMANCE-NOTES.md); here one listener per stream cancels the work when the client leaves,
so the upstream request is closed and Ollama stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from starlette.types import Message, Receive, Scope, Send

from citadel_proxy import errors
from citadel_proxy.openai.sse import KEEPALIVE, ChunkEncoder
from citadel_proxy.pipeline.replay import CompletionStream
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.pipeline.types import Context, Reply, TokenStream

_log = logging.getLogger("citadel_proxy.stream")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamResponse:
    def __init__(
        self,
        ctx: Context,
        handler: Handler,
        encoder: ChunkEncoder,
        *,
        keepalive_s: float,
        header_grace_s: float,
        on_finish: Callable[[Context], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self._handler = handler
        self._encoder = encoder
        self._keepalive_s = keepalive_s
        self._grace_s = header_grace_s
        self._on_finish = on_finish
        self._headers_sent = False
        self._client_gone = False
        self._stream: TokenStream | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, task))
        try:
            await self._run(send)
        except errors.GatewayError as error:
            await self._fail(error, send)
        except asyncio.CancelledError:
            if not self._client_gone:
                raise
            task.uncancel()
            self.ctx.outcome.client_gone()
        finally:
            watcher.cancel()
            if self._stream is not None:
                await self._stream.aclose()
            if self._on_finish is not None:
                self._on_finish(self.ctx)

    async def _run(self, send: Send) -> None:
        try:
            async with asyncio.timeout(self.ctx.pipeline.timeout_s) as deadline:
                self._stream = await self._start(send)
                await self._pump(self._stream, send)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise deadline_error(self.ctx) from None

    async def _watch(self, receive: Receive, task: asyncio.Task[None]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._client_gone = True
        task.cancel()

    async def _start(self, send: Send) -> TokenStream:
        """Run the pipeline; if Ollama is slow to answer, open the stream and keep it alive meanwhile."""
        work = asyncio.create_task(self._handler(self.ctx))
        reply: Reply | None = None
        try:
            done, _ = await asyncio.wait((work,), timeout=self._grace_s)
            while not done:
                if not self._headers_sent:
                    await self._send_headers(send)
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                done, _ = await asyncio.wait((work,), timeout=self._keepalive_s)
            reply = work.result()
        finally:
            if reply is None:
                work.cancel()
                with contextlib.suppress(BaseException):
                    await _close_when_done(work)
        return _stream_of(reply, self.ctx)

    async def _pump(self, stream: TokenStream, send: Send) -> None:
        if not self._headers_sent:
            await self._send_headers(send)
        encode = self._encoder.encode
        read = stream.read
        while (batch := await read()) is not None:
            # Let go of the last tokens and event before waiting again: an idle stream holds neither.
            data, batch = encode(batch), None
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            data = b""
        trailer = self._encoder.trailer(self.ctx.outcome, self.ctx.include_usage)
        await send({"type": "http.response.body", "body": trailer, "more_body": False})

    async def _send_headers(self, send: Send) -> None:
        headers = _SSE_HEADERS + [
            (k.lower().encode(), v.encode()) for k, v in self.ctx.response_headers.items()
        ]
        self._headers_sent = True
        await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _fail(self, error: errors.GatewayError, send: Send) -> None:
        self.ctx.outcome.status, self.ctx.outcome.error_code = error.status, error.code
        if self._client_gone:
            return
        if self._headers_sent:
            message: Message = {"type": "http.response.body", "body": errors.sse_error_event(error)}
            await send(message)
            return
        headers = [(b"content-type", b"application/json")]
        headers += [
            (k.lower().encode(), v.encode())
            for k, v in {**self.ctx.response_headers, **error.headers}.items()
        ]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": error.to_json()})


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
    outcome = ctx.outcome
    outcome.finish_reason = completion.finish_reason
    outcome.prompt_tokens, outcome.completion_tokens = completion.prompt_tokens, completion.completion_tokens
    return CompletionStream(completion)


async def _close_when_done(work: asyncio.Task[Reply]) -> None:
    # The pipeline may have produced a reply just as we were cancelled: its upstream must not leak.
    reply = await work
    if reply.stream is not None:
        await reply.stream.aclose()
