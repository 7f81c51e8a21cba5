"""`python -m bench.tracing_cost`: the CPU tracing adds to a request, measured in-process.

One request's trace calls, made as the pipeline makes them (begin at the route; key lookup, rate limit
and cache lookup; the upstream attempt of a stream; the audit hand-off; the end, with its attributes and
the hand-over to the SDK's BatchSpanProcessor), around waits that complete at once, `--requests` times
with tracing enabled at sample ratio 1 and disabled (the hooks' None checks alone). The difference is
what tracing costs the event loop's thread per request (`time.thread_time`, best of interleaved rounds).
The export thread's share (child spans made from the notes, OTLP protobuf encoded) is timed apart, in
that thread, with an exporter that encodes each batch as the OTLP exporter does and sends it nowhere.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from starlette.datastructures import Headers
from starlette.requests import Request

from citadel_proxy.config.schema import Project, Tracing
from citadel_proxy.observability.otlp import Export
from citadel_proxy.observability.tracing import RequestTracer
from citadel_proxy.pipeline.request import InferenceRequest
from citadel_proxy.pipeline.spec import Pipeline
from citadel_proxy.pipeline.types import Context, Principal, Reply


class Encoded(SpanExporter):
    """Counts the spans; with `encode`, encodes each batch as the OTLP exporter does (sent nowhere) and
    counts the CPU that took in the export thread."""

    def __init__(self, encode: bool) -> None:
        self.encode = encode
        self.spans = 0
        self.bytes = 0
        self.cpu_s = 0.0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        started = time.thread_time()
        size = len(encode_spans(spans).SerializePartialToString()) if self.encode else 0
        with self._lock:
            self.spans += len(spans)
            self.bytes += size
            self.cpu_s += time.thread_time() - started
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class Figures:
    requests: int
    disabled_us: float
    enabled_us: float
    added_us: float
    export_thread_us: float
    spans_per_request: float
    otlp_bytes_per_request: float


async def _now() -> None:
    return None


async def _waited(ctx: Context, name: str) -> None:
    # The hooks' shape: `await (pending if trace is None else trace.waited(name, pending))`.
    pending, trace = _now(), ctx.trace
    await (pending if trace is None else trace.waited(name, pending))


async def _attempt(ctx: Context, headers: Mapping[str, str] | None = None) -> Reply:
    trace = ctx.trace
    if trace is not None and headers is None:
        return await trace.attempt_upstream("127.0.0.1", 11434, lambda given: _attempt(ctx, given))
    return Reply(stream=_Ended())


class _Ended:
    async def read(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def _request(tracer: RequestTracer | None, request: Request, ctx: Context) -> None:
    ctx.trace = None if tracer is None else tracer.begin(request, "chat", ctx.route)
    await _waited(ctx, "key lookup")
    await _waited(ctx, "rate limit")
    await _waited(ctx, "cache lookup")
    await _attempt(ctx)
    outcome = ctx.outcome
    outcome.first_token_at = outcome.finished_at = time.perf_counter()
    outcome.prompt_tokens, outcome.completion_tokens, outcome.finish_reason = 12, 64, "stop"
    await _waited(ctx, "audit hand-off")
    if ctx.trace is not None:
        ctx.trace.end(ctx)


def _drive(coroutine: Coroutine[Any, Any, None]) -> None:
    # Every wait completes at once: no event loop is needed, so none is measured.
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("a wait did not complete at once")


def _context() -> Context:
    request = msgspec.convert(
        {"kind": "chat", "model": "phi3:latest", "messages": [{"role": "user", "content": "hi"}]},
        InferenceRequest,
    )
    pipeline = Pipeline("chat", "chat.yaml", "chat", (), False, False, 600.0, "", ())
    return Context(
        "req-1", pipeline, "/v1/chat/completions", "127.0.0.1", Headers({}), request, "phi3", "phi3:latest",
        True, principal=Principal("app", frozenset({"inference"})),
    )  # fmt: skip


# Below the processor's queue (2048 spans): flushed between chunks, outside the time measured.
_CHUNK = 1000


def _run(tracer: RequestTracer | None, requests: int, export: Export | None = None) -> float:
    """CPU of this thread per request, in µs."""
    scope: dict[str, Any] = {"type": "http", "headers": [], "state": {}}
    spent = 0.0
    for chunk in range(0, requests, _CHUNK):
        started = time.thread_time()
        for _ in range(min(_CHUNK, requests - chunk)):
            _drive(_request(tracer, Request(scope), _context()))
        spent += time.thread_time() - started
        if export is not None:
            export.force_flush()
    return spent / requests * 1e6


def _tracer(encode: bool) -> tuple[RequestTracer, Export, Encoded]:
    settings = Tracing(enabled=True, sample_ratio=1.0)
    exporter = Encoded(encode)
    export = Export(settings, Project(name="bench"), exporter=exporter)
    return RequestTracer(settings, export), export, exporter


def measure(requests: int, rounds: int = 5) -> Figures:
    # The request path with an export thread that only counts: what the event loop's thread pays.
    tracer, export, counted = _tracer(encode=False)
    disabled, enabled = [], []
    try:
        for _ in range(rounds):  # interleaved, the best of each kept: the machine may be shared
            disabled.append(_run(None, requests))
            enabled.append(_run(tracer, requests, export))
    finally:
        export.shutdown()
    # The export thread's work, with the spans encoded as the OTLP exporter encodes them.
    tracer, export, encoded = _tracer(encode=True)
    try:
        _run(tracer, requests, export)
    finally:
        export.shutdown()
    return Figures(
        requests=requests,
        disabled_us=round(min(disabled), 2),
        enabled_us=round(min(enabled), 2),
        added_us=round(min(enabled) - min(disabled), 2),
        export_thread_us=round(encoded.cpu_s / requests * 1e6, 1),
        spans_per_request=counted.spans / (requests * rounds),
        otlp_bytes_per_request=round(encoded.bytes / requests),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The CPU tracing adds to a request (in-process).")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args(argv)
    figures = measure(args.requests)
    print(
        f"tracing, {figures.requests} requests a round: {figures.disabled_us:.2f} µs disabled, "
        f"{figures.enabled_us:.2f} µs enabled at ratio 1: +{figures.added_us:.2f} µs per request on the "
        f"request path; export thread {figures.export_thread_us:.1f} µs per request "
        f"({figures.spans_per_request:g} spans, {figures.otlp_bytes_per_request:.0f} bytes of OTLP)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(figures), indent=2))


if __name__ == "__main__":
    main()
