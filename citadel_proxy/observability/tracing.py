"""OpenTelemetry traces of the inference requests: a span per request, and one per stage that waits.

Why the spans are noted here rather than made with the SDK's Tracer: starting and ending an SDK span
costs about as much as all of a request's tracing on its own thread does (README, Tracing). A request
notes its waits as (name, start, end) while it runs, only those that suspend it (`_watched`), and hands one
span, its own, to the SDK's BatchSpanProcessor when it ends; its children are made from the notes in the
processor's export thread (otlp.py), and the SDK's OTLP exporter sends them all. Nothing from
OpenTelemetry is imported unless `monitoring.tracing.enabled` is true; when it is false a request pays
one None check per hook.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import types
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from citadel_proxy import errors
from citadel_proxy.observability.spans import request_attributes, settle_attempt

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from starlette.requests import Request

    from citadel_proxy.config.schema import Config, Tracing
    from citadel_proxy.observability.otlp import Export
    from citadel_proxy.pipeline.types import Context, Delta, Reply, TokenStream

T = TypeVar("T")
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# Printable ASCII: it is passed on to Ollama in a header of its own.
_TRACESTATE = re.compile(r"[\x20-\x7e]+")
# W3C's limit for what a vendor must pass on; a longer tracestate is dropped rather than cut.
_MAX_TRACESTATE = 512
_time_ns = time.time_ns


def _new_id(bits: int) -> int:
    # As the SDK's RandomIdGenerator; zero is the invalid id.
    while not (value := random.getrandbits(bits)):
        pass
    return value


@dataclass(slots=True)
class Note:
    """A stage's wait or an upstream attempt, made into a child span of the request's at export."""

    name: str
    # 0: made in the export thread (only an upstream attempt's id is needed sooner, for its traceparent).
    span_id: int
    start_ns: int
    end_ns: int = 0
    error_type: str | None = None
    # The span's status is ERROR (a server-side failure), with this description.
    error_message: str | None = None
    # An upstream attempt: a CLIENT span with these attributes, and the first token's time.
    attributes: dict[str, Any] | None = None
    first_token_ns: int | None = None

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, errors.GatewayError):
            self.error_type = exc.code or type(exc).__name__
            if exc.status >= 500:
                self.error_message = exc.message
        elif isinstance(exc, asyncio.CancelledError):
            self.error_type = "cancelled"
        else:
            self.error_type = type(exc).__name__
            self.error_message = self.error_type


class RequestTracer:
    """The worker's tracing: decides which requests are sampled and hands their spans to the exporter."""

    def __init__(self, settings: Tracing, export: Export) -> None:
        self.settings = settings
        self.export = export
        # TraceIdRatioBased's rule (the trace id's low 64 bits below a bound), so that sampling agrees
        # with any other service configured with the same ratio.
        self._bound = round(settings.sample_ratio * (1 << 64))

    def begin(self, request: Request, pipeline: str, route: str) -> RequestTrace:
        """The trace of an inference request that just arrived, continuing a client's traceparent."""
        headers = request.headers
        trace = RequestTrace(self, pipeline, route)
        parent = _parent(headers.get(TRACEPARENT))
        if parent is None:
            trace.trace_id = _new_id(128)
            trace.sampled = (trace.trace_id & 0xFFFFFFFFFFFFFFFF) < self._bound
        else:
            trace.trace_id, trace.parent_id, trace.sampled = parent
            state = headers.get(TRACESTATE)
            if state and len(state) <= _MAX_TRACESTATE and _TRACESTATE.fullmatch(state):
                trace.trace_state = state
        # Read by the one place a refusal is recorded (http/responses.py), for a request without a context.
        request.scope["state"]["trace"] = trace
        return trace


def _parent(header: str | None) -> tuple[int, int, bool] | None:
    """Trace id, span id and sampled flag of a valid W3C traceparent; None for none or an invalid one."""
    if not header:
        return None
    match = _TRACEPARENT.fullmatch(header.strip())
    if match is None:
        return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not (trace_id and span_id):
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


class RequestTrace:
    """One request's trace: its ids, the waits noted so far, and its end (exported once)."""

    __slots__ = (
        "attempt",
        "ended",
        "notes",
        "output",
        "parent_id",
        "pipeline",
        "route",
        "sampled",
        "span_id",
        "start_ns",
        "start_pc",
        "trace_id",
        "trace_state",
        "tracer",
        "waits",
    )  # fmt: skip

    def __init__(self, tracer: RequestTracer, pipeline: str, route: str) -> None:
        self.tracer = tracer
        self.pipeline = pipeline
        self.route = route
        self.trace_id = 0
        self.span_id = _new_id(64)
        self.parent_id: int | None = None
        self.sampled = False
        self.trace_state: str | None = None
        self.start_ns = time.time_ns()
        self.start_pc = time.perf_counter()
        # Upstream attempts and failed waits; waits that ended well are (name, start_ns, end_ns).
        self.notes: list[Note] = []
        self.waits: list[tuple[str, int, int]] = []
        self.attempt: Note | None = None
        self.output: list[str] | None = None
        self.ended = False

    def ids(self) -> tuple[str, str]:
        """Trace id and the request's span id, as the access log and W3C write them."""
        return f"{self.trace_id:032x}", f"{self.span_id:016x}"

    def waited(self, name: str, pending: Awaitable[T]) -> Awaitable[T]:
        """`pending`, awaited as a child span named `name` if it waits (suspends the request's task): a
        key looked up in PostgreSQL, a Redis call, a queue; one that completes at once (a key or a rate
        limit held in memory, a hand-off into a queue with room) adds no span."""
        return _watched(self, name, pending) if self.sampled else pending

    async def attempt_upstream(
        self, host: str, port: int, call: Callable[[dict[str, str]], Awaitable[Reply]]
    ) -> Reply:
        """One call to a backend as a CLIENT span; `call` gets the headers that carry the trace on to it.

        A whole answer ends the span when it arrives; a stream's span ends with the stream, when the
        request does (its first token and end are read from the outcome then, at no cost per token).
        """
        if not self.sampled:  # Ollama is still told the trace, as not sampled
            return await call(self.headers_for(_new_id(64)))
        note = Note(
            "upstream", _new_id(64), time.time_ns(), attributes={"server.address": host, "server.port": port}
        )
        self.notes.append(note)
        try:
            reply = await call(self.headers_for(note.span_id))
        except BaseException as exc:
            note.end_ns = time.time_ns()
            note.failed(exc)
            raise
        self.attempt = note
        if reply.stream is None:
            note.end_ns = time.time_ns()
            if self.tracer.settings.capture_content and reply.completion is not None:
                self.output = [reply.completion.content]
        elif self.tracer.settings.capture_content:
            self.output = []
            reply.stream = CapturedStream(reply.stream, self.output)
        return reply

    def headers_for(self, span_id: int) -> dict[str, str]:
        headers = {TRACEPARENT: f"00-{self.trace_id:032x}-{span_id:016x}-{'01' if self.sampled else '00'}"}
        if self.trace_state:
            headers[TRACESTATE] = self.trace_state
        return headers

    def end(self, ctx: Context) -> None:
        """The request is over (answered, failed or abandoned): its span and its children are exported."""
        if self.ended:
            return
        self.ended = True
        if not self.sampled:
            return
        settle_attempt(self, ctx)
        attributes = request_attributes(self, ctx)
        status = ctx.outcome.status
        failure = ctx.outcome.error_code if status >= 500 else None
        name = f"{attributes['gen_ai.operation.name']} {ctx.model_requested}"
        self.tracer.export.emit(self, name, attributes, failure, time.time_ns())

    def refused(self, status: int, code: str | None, key: str | None) -> None:
        """The request was refused before its pipeline ran (bad key, bad body): a span of its own."""
        if self.ended:
            return
        self.ended = True
        if not self.sampled:
            return
        attributes: dict[str, Any] = {
            "http.route": self.route,
            "http.response.status_code": status,
            "citadel.pipeline": self.pipeline,
        }
        if code:
            attributes["error.type"] = code
        if key:
            attributes["citadel.key"] = key
        failure = code if status >= 500 else None
        self.tracer.export.emit(self, f"refused {self.route}", attributes, failure, time.time_ns())

    def epoch_ns(self, perf_counter: float) -> int:
        """A `time.perf_counter()` reading of this request as wall-clock nanoseconds."""
        return self.start_ns + int((perf_counter - self.start_pc) * 1e9)


@types.coroutine
def _watched(trace: RequestTrace, name: str, pending: Awaitable[T]) -> Generator[Any, Any, T]:
    """`pending`, noting its span only once it suspends (what `yield from` does, spelled out: the first
    step tells whether it waits). A generator rather than an object with `__await__`: most stages
    complete at once, and this makes one object for them, not two."""
    inner = pending.__await__()
    start_ns = _time_ns()
    try:
        signal = inner.send(None)
    except StopIteration as done:
        at_once: T = done.value  # it did not wait (a failure at once is the request's own)
        return at_once
    try:
        while True:
            try:
                sent = yield signal
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # a cancellation, passed on to what waits
                signal = inner.throw(exc)
            else:
                signal = inner.send(sent)
    except StopIteration as done:
        result: T = done.value
    except GeneratorExit:
        raise
    except BaseException as exc:
        if not trace.ended:
            note = Note(name, 0, start_ns, _time_ns())
            note.failed(exc)
            trace.notes.append(note)
        raise
    if not trace.ended:
        # A plain tuple: most waits end well, and a Note costs more to make.
        trace.waits.append((name, start_ns, _time_ns()))
    return result


class CapturedStream:
    """Keeps the answer's text as it passes (only with `capture_content`), for gen_ai.output.messages."""

    __slots__ = ("_inner", "_parts")

    def __init__(self, inner: TokenStream, parts: list[str]) -> None:
        self._inner = inner
        self._parts = parts

    async def read(self) -> list[Delta] | None:
        batch = await self._inner.read()
        if batch:
            self._parts.extend(delta.content for delta in batch)
        return batch

    async def aclose(self) -> None:
        await self._inner.aclose()


async def open_tracing(config: Config, stack: AsyncExitStack) -> RequestTracer | None:
    """The worker's tracer when `monitoring.tracing.enabled`, its exporter flushed and closed at shutdown."""
    settings = config.monitoring.tracing
    if not settings.enabled:
        return None
    from citadel_proxy.observability.otlp import Export

    export = Export(settings, config.project)
    # Blocking (it sends what is left): run beside the loop, so a collector's answer can arrive.
    stack.push_async_callback(asyncio.to_thread, export.shutdown)
    return RequestTracer(settings, export)
