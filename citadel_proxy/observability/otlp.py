"""The OpenTelemetry SDK's side of tracing: its BatchSpanProcessor and OTLP exporter (HTTP or gRPC).

Imported only when `monitoring.tracing.enabled` is true. A request hands over one span, its own
(`RequestSpan`), carrying the notes of its waits; `Unfold` makes the notes into child spans in the
processor's export thread, right before the SDK's exporter encodes and sends the batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from citadel_proxy.observability.tracing import Note

if TYPE_CHECKING:
    from citadel_proxy.config.schema import Project, Tracing
    from citadel_proxy.observability.tracing import RequestTrace

_HTTP_DEFAULT = "http://127.0.0.1:4318/v1/traces"
_GRPC_DEFAULT = "http://127.0.0.1:4317"
_FLAGS = {True: TraceFlags(TraceFlags.SAMPLED), False: TraceFlags(TraceFlags.DEFAULT)}


class _Context(SpanContext):
    """A SpanContext as the processor and the encoder read it, made cheaper where they pay for it: made
    without SpanContext's checks (the ids are ours, or a traceparent's checked in tracing._parent), its
    fields read by C getters where SpanContext has a Python property each (the encoder reads five a
    span), and no TraceState at all when there is none (the encoder then leaves the field out rather
    than joining an empty one)."""

    __slots__ = ()
    trace_id = property(itemgetter(0))
    span_id = property(itemgetter(1))
    is_remote = property(itemgetter(2))
    trace_flags = property(itemgetter(3))
    trace_state = property(itemgetter(4))
    is_valid = property(itemgetter(5))


def _context(
    trace_id: int, span_id: int, flags: TraceFlags, state: TraceState | None = None, remote: bool = False
) -> SpanContext:
    # SpanContext's own layout: (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid).
    return tuple.__new__(_Context, (trace_id, span_id, remote, flags, state, True))


class _Mark(Event):
    """An event without attributes (the first token's) as the encoder reads it: slots where Event has
    properties."""

    __slots__ = ("name", "timestamp")
    name: str
    timestamp: int
    attributes = None
    dropped_attributes = 0

    def __init__(self, name: str, timestamp: int) -> None:
        self.name = name
        self.timestamp = timestamp


class Span(ReadableSpan):
    """A finished span as the SDK's OTLP encoder reads it: its fields are slots where the base has
    properties (a call each, and copies of the attributes and events, for every span encoded). The
    base's __init__ is not run: the encoder reads only what is set here."""

    __slots__ = (
        "attributes", "end_time", "events", "instrumentation_scope", "kind", "name", "parent", "resource",
        "start_time", "status",
    )  # fmt: skip
    name: str
    parent: SpanContext | None
    resource: Resource
    instrumentation_scope: InstrumentationScope | None
    attributes: dict[str, Any] | None
    events: tuple[Event, ...]
    kind: SpanKind
    status: Status | None  # type: ignore[assignment]  # None: UNSET, left out of the encoding
    start_time: int
    end_time: int
    # Nothing is ever dropped or linked.
    dropped_attributes = dropped_events = dropped_links = 0
    links: tuple[()] = ()

    def __init__(
        self, name: str, context: SpanContext, parent: SpanContext | None, resource: Resource,
        scope: InstrumentationScope | None, attributes: dict[str, Any] | None, events: tuple[Event, ...],
        kind: SpanKind, status: Status | None, start_ns: int, end_ns: int,
    ) -> None:  # fmt: skip
        self._context = context
        self.name = name
        self.parent = parent
        self.resource = resource
        self.instrumentation_scope = scope
        self.attributes = attributes
        self.events = events
        self.kind = kind
        self.status = status
        self.start_time = start_ns
        self.end_time = end_ns


class RequestSpan(Span):
    """A request's span as the request hands it over: only its context (all the processor reads) is set;
    `Unfold` makes the rest, and the children from the trace's notes, in the export thread."""

    def __init__(  # Span's __init__ runs in complete(), off the request's thread
        self, context: SpanContext, export: Export, trace: RequestTrace, name: str,
        attributes: dict[str, Any], failure: str | None, end_ns: int,
    ) -> None:  # fmt: skip
        self._context = context
        self.own_context = context
        self.trace = trace
        self._pending = (export, name, attributes, failure, end_ns)

    def complete(self) -> None:
        export, name, attributes, failure, end_ns = self._pending
        trace = self.trace
        context = self.own_context
        state = TraceState.from_header([trace.trace_state]) if trace.trace_state else None
        if state is not None:
            context = _context(trace.trace_id, trace.span_id, context.trace_flags, state)
        parent = None
        if trace.parent_id is not None:
            parent = _context(trace.trace_id, trace.parent_id, context.trace_flags, state, remote=True)
        Span.__init__(
            self, name, context, parent, export.resource, export.scope, attributes, (), SpanKind.SERVER,
            _status(failure), trace.start_ns, end_ns,
        )  # fmt: skip


class Unfold(SpanExporter):
    """Passes each request span to the SDK's exporter followed by its children, made from its notes."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([each for span in spans for each in _family(span)])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _family(span: ReadableSpan) -> Iterator[ReadableSpan]:
    if not isinstance(span, RequestSpan):
        yield span
        return
    span.complete()
    yield span
    parent = span.context
    for name, start_ns, end_ns in span.trace.waits:
        yield _child(span, parent, Note(name, 0, start_ns, end_ns))
    for note in span.trace.notes:
        yield _child(span, parent, note)


def _child(span: RequestSpan, parent: SpanContext, note: Note) -> Span:
    span_id = note.span_id or random.getrandbits(64) or 1
    context = _context(parent.trace_id, span_id, parent.trace_flags, parent.trace_state)
    attributes = note.attributes
    name = note.name
    if attributes is not None:  # an upstream attempt: a client span, named for what it asked
        request = span.attributes or {}
        name = f"{request['gen_ai.operation.name']!s} {request['gen_ai.response.model']!s}"
    if note.error_type:
        attributes = {**(attributes or {}), "error.type": note.error_type}
    events = () if note.first_token_ns is None else (_Mark("first_token", note.first_token_ns),)
    kind = SpanKind.CLIENT if note.attributes is not None else SpanKind.INTERNAL
    return Span(
        name, context, parent, span.resource, span.instrumentation_scope, attributes, events, kind,
        _status(note.error_message), note.start_ns, note.end_ns or span.end_time,
    )  # fmt: skip


def _status(failure: str | None) -> Status | None:
    # None for UNSET: the encoder then leaves the field out (a receiver reads UNSET), at no cost.
    return None if failure is None else Status(StatusCode.ERROR, failure)


class _Resource(Resource):
    """The SDK's Resource, hashed once: the encoder groups every span by its resource, and a
    Resource's own hash is a JSON dump of its attributes."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class _Scope(InstrumentationScope):
    """The SDK's InstrumentationScope, hashed once (the encoder groups the spans by it too)."""

    def __init__(self, name: str, version: str | None) -> None:
        super().__init__(name, version)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class Export:
    """The SDK's batch processor (queue, export thread) in front of its OTLP exporter."""

    def __init__(self, settings: Tracing, project: Project, exporter: SpanExporter | None = None) -> None:
        resource: dict[str, Any] = {"service.name": project.name}
        if project.version:
            resource["service.version"] = project.version
        if project.environment:
            resource["deployment.environment.name"] = project.environment
        # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES, as every OpenTelemetry SDK does.
        self.resource = _Resource(Resource.create(resource))
        self.scope = _Scope("citadel_proxy", project.version or None)
        # `exporter`: another than the configured OTLP one (bench/tracing_cost.py measures with its own).
        self._processor = BatchSpanProcessor(Unfold(exporter or _exporter(settings)))

    def emit(
        self, trace: RequestTrace, name: str, attributes: dict[str, Any], failure: str | None, end_ns: int
    ) -> None:
        context = _context(trace.trace_id, trace.span_id, _FLAGS[trace.sampled])
        self._processor.on_end(RequestSpan(context, self, trace, name, attributes, failure, end_ns))

    def force_flush(self) -> bool:
        return self._processor.force_flush()

    def shutdown(self) -> None:
        self._processor.shutdown()  # type: ignore[no-untyped-call]


def _exporter(settings: Tracing) -> SpanExporter:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        endpoint = settings.endpoint or _GRPC_DEFAULT
        return GrpcExporter(endpoint=endpoint, insecure=urlsplit(endpoint).scheme != "https")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=http_endpoint(settings.endpoint))


def http_endpoint(endpoint: str | None) -> str:
    """The traces URL: a collector's address without a path gets OTLP's /v1/traces."""
    if not endpoint:
        return _HTTP_DEFAULT
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint
