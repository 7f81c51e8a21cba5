"""`python -m bench.tracing_cost`: the CPU tracing adds to a request, measured in-process (also part of
`python -m bench`).

One request's trace calls, made as the pipeline makes them (begin at the route; key lookup, rate limit
and cache lookup; the upstream attempt of a stream; the audit hand-off; the end, with its attributes and
the hand-over to the SDK's BatchSpanProcessor). In the default deployment (keys in the config, rate
limits and cache in the worker, audit into an in-memory queue) only the upstream attempt waits; with
`--waits N` that many of the stages wait as a Redis call would (each then has a span of its own).

Two threads pay for a traced request, both timed as CPU (`time.thread_time` and the thread's CPU clock):
- the event loop's thread: the calls above `--requests` times with tracing enabled at ratio 1 and
  disabled (the hooks' None checks alone), interleaved rounds, best of each; the difference is tracing's;
- the processor's export thread: the same requests with the SDK's OTLP/HTTP exporter sending to a
  local receiver (its own threads, not counted), at the processor's default batch size; the export
  thread's CPU plus that of the flushes made from the request thread, per request.
Target (issue 19): the two together at most 15 µs per request.

`--floor` prints what the SDK's OTLP encoder (`encode_spans`) alone costs per request, in batches of
512, for spans made as otlp.py makes them: the two spans every traced request has with no attribute at
all (the request's, and Ollama's with its `first_token` event), with the fewest attributes the issue
asks for, and with the shipped configuration's; and what one attribute adds, by type.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Coroutine, Generator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
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

TARGET_US = 15.0
_STAGES = ("key lookup", "rate limit", "cache lookup", "audit hand-off")


class Counted(SpanExporter):
    """Counts the spans and sends nothing: the export thread's work kept out of the request path's."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class Figures:
    requests: int
    waits: int
    disabled_us: float
    enabled_us: float
    request_thread_us: float
    export_thread_us: float
    total_us: float
    spans_per_request: float
    otlp_bytes_per_request: float
    requests_per_batch: float

    @property
    def verdict(self) -> str:
        return "PASS" if self.total_us <= TARGET_US else "MISS"


async def _now() -> None:
    return None


class _Suspends:
    """A wait that suspends once, as a Redis round trip does."""

    def __await__(self) -> Generator[None, None, None]:
        yield None


async def _waited(ctx: Context, name: str, suspends: bool) -> None:
    # The hooks' shape: `await (pending if trace is None else trace.waited(name, pending))`.
    pending, trace = (_Suspends() if suspends else _now()), ctx.trace
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


async def _request(tracer: RequestTracer | None, request: Request, ctx: Context, waits: int) -> None:
    request.headers  # noqa: B018 (the route reads them, traced or not: auth, the body's limits)
    ctx.trace = None if tracer is None else tracer.begin(request, "chat", ctx.route)
    await _waited(ctx, _STAGES[0], waits > 0)
    await _waited(ctx, _STAGES[1], waits > 1)
    await _waited(ctx, _STAGES[2], waits > 2)
    await _attempt(ctx)
    outcome = ctx.outcome
    outcome.first_token_at = outcome.finished_at = time.perf_counter()
    outcome.prompt_tokens, outcome.completion_tokens, outcome.finish_reason = 12, 64, "stop"
    await _waited(ctx, _STAGES[3], waits > 3)
    if ctx.trace is not None:
        ctx.trace.end(ctx)


def _drive(coroutine: Coroutine[Any, Any, None]) -> None:
    # The waits resume at once: no event loop is needed, so none is measured.
    for _ in range(len(_STAGES) + 1):
        try:
            coroutine.send(None)
        except StopIteration:
            return
    raise RuntimeError("the request did not end")


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


# Below the processor's queue (2048 requests): flushed between chunks.
_CHUNK = 1000


def _run(tracer: RequestTracer | None, requests: int, waits: int, flush: Export | None = None) -> float:
    """CPU of this thread per request, in µs (the flushes between chunks not counted)."""
    scope: dict[str, Any] = {"type": "http", "headers": [], "state": {}}
    spent = 0.0
    for chunk in range(0, requests, _CHUNK):
        started = time.thread_time()
        for _ in range(min(_CHUNK, requests - chunk)):
            _drive(_request(tracer, Request(scope), _context(), waits))
        spent += time.thread_time() - started
        if flush is not None:
            flush.force_flush()
    return spent / requests * 1e6


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that reads each batch and answers 200 (an empty ExportTraceServiceResponse)."""

    received = [0, 0]  # batches, bytes

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", 0))
        self.rfile.read(size)
        _Sink.received[0] += 1
        _Sink.received[1] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def _receiver() -> Generator[str, None, None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _export_thread_us(requests: int, waits: int) -> tuple[float, float, float]:
    """CPU spent exporting, per request, with the SDK's OTLP/HTTP exporter; bytes and requests a batch."""
    with _receiver() as endpoint:
        settings = Tracing(enabled=True, sample_ratio=1.0, endpoint=endpoint)
        before = set(threading.enumerate())
        export = Export(settings, Project(name="bench"))
        worker = next(t for t in threading.enumerate() if t not in before and t.name.startswith("OtelBatch"))
        clock = time.pthread_getcpuclockid(worker.ident or 0)
        tracer = RequestTracer(settings, export)
        try:
            _run(tracer, _CHUNK, waits, export)  # warm: the exporter's session and connection
            _Sink.received[:] = [0, 0]
            worker_started, flushed = time.clock_gettime(clock), 0.0
            scope: dict[str, Any] = {"type": "http", "headers": [], "state": {}}
            for chunk in range(0, requests, _CHUNK):
                for _ in range(min(_CHUNK, requests - chunk)):
                    _drive(_request(tracer, Request(scope), _context(), waits))
                started = time.thread_time()
                export.force_flush()  # exports in this thread what the worker has not
                flushed += time.thread_time() - started
            spent = time.clock_gettime(clock) - worker_started + flushed
            batches, size = _Sink.received
        finally:
            export.shutdown()
    return spent / requests * 1e6, size / requests, requests / max(batches, 1)


def measure(requests: int, rounds: int = 5, waits: int = 0) -> Figures:
    # The request path with an export thread that only counts: what the event loop's thread pays.
    settings = Tracing(enabled=True, sample_ratio=1.0)
    counted = Counted()
    export = Export(settings, Project(name="bench"), exporter=counted)
    tracer = RequestTracer(settings, export)
    disabled, enabled = [], []
    try:
        for _ in range(rounds):  # interleaved, the best of each kept: the machine may be shared
            disabled.append(_run(None, requests, waits))
            enabled.append(_run(tracer, requests, waits, export))
    finally:
        export.shutdown()
    export_us, size, per_batch = _export_thread_us(requests, waits)
    added = min(enabled) - min(disabled)
    return Figures(
        requests=requests,
        waits=waits,
        disabled_us=round(min(disabled), 2),
        enabled_us=round(min(enabled), 2),
        request_thread_us=round(added, 2),
        export_thread_us=round(export_us, 2),
        total_us=round(added + export_us, 2),
        spans_per_request=counted.spans / (requests * rounds),
        otlp_bytes_per_request=round(size),
        requests_per_batch=round(per_batch),
    )


def line(figures: Figures) -> str:
    return (
        f"{figures.spans_per_request:g} spans ({figures.waits} stages waiting): event-loop thread "
        f"+{figures.request_thread_us:.2f} µs ({figures.disabled_us:.2f} -> {figures.enabled_us:.2f}), "
        f"export thread {figures.export_thread_us:.2f} µs ({figures.otlp_bytes_per_request:.0f} B of OTLP, "
        f"{figures.requests_per_batch:.0f} requests a batch): total {figures.total_us:.2f} µs per request "
        f"{figures.verdict} <= {TARGET_US:g}"
    )


def bench_section(quick: bool) -> dict[str, Any]:
    """For `python -m bench`: prints the figures (the default deployment, then two stages waiting as
    Redis calls do) and returns them for the results file."""
    requests, rounds = (2000, 2) if quick else (5000, 3)
    title = "Tracing at sample ratio 1, CPU per request (bench/tracing_cost.py"
    print(f"\n{title}, issue 19: <= {TARGET_US:g} µs):")
    runs = [measure(requests, rounds, waits) for waits in (0, 2)]
    for figures in runs:
        print("  " + line(figures))
    return {"target_us": TARGET_US, "runs": [{**asdict(f), "verdict": f.verdict} for f in runs]}


_FLOOR_BATCH = 512
_MINIMUM = {
    "gen_ai.operation.name": "chat", "gen_ai.system": "ollama", "gen_ai.request.model": "phi3",
    "citadel.pipeline": "chat", "citadel.key": "app", "session.id": "conversation-0123456789",
}  # fmt: skip
_SHIPPED = {
    **_MINIMUM, "gen_ai.response.model": "phi3:latest", "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 64, "gen_ai.response.finish_reasons": ("stop",),
    "http.route": "/v1/chat/completions", "http.response.status_code": 200, "citadel.stream": True,
}  # fmt: skip
_BACKEND = {"server.address": "127.0.0.1", "server.port": 11434}


def _spans(request: dict[str, Any] | None, attempt: dict[str, Any] | None, child: bool) -> list[ReadableSpan]:
    import random

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import SpanKind, TraceFlags

    from citadel_proxy.observability.otlp import Span, _context, _Mark, _Resource, _Scope

    resource, scope = _Resource(Resource.create({"service.name": "bench"})), _Scope("citadel_proxy", None)
    flags, start = TraceFlags(TraceFlags.SAMPLED), time.time_ns()
    spans: list[ReadableSpan] = []
    for _ in range(_FLOOR_BATCH):
        trace_id = random.getrandbits(128)
        own = _context(trace_id, random.getrandbits(64), flags)
        spans.append(Span(
            "chat phi3", own, None, resource, scope, request and dict(request), (), SpanKind.SERVER, None,
            start, start + 1000,
        ))  # fmt: skip
        if child:
            spans.append(Span(
                "chat phi3:latest", _context(trace_id, random.getrandbits(64), flags), own, resource, scope,
                attempt and dict(attempt), (_Mark("first_token", start + 500),), SpanKind.CLIENT, None,
                start, start + 1000,
            ))  # fmt: skip
    return spans


def encoder_floor(rounds: int = 15) -> dict[str, float]:
    """µs of thread CPU per request (a request span and, but for the one-attribute rows, Ollama's) of
    the SDK's encode_spans alone, best of `rounds`."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    def cost(spans: list[ReadableSpan]) -> float:
        best = float("inf")
        for _ in range(rounds):
            started = time.thread_time()
            encode_spans(spans)
            best = min(best, time.thread_time() - started)
        return best / _FLOOR_BATCH * 1e6

    fewest, shipped = f"{len(_MINIMUM)} + {len(_BACKEND)}", f"{len(_SHIPPED)} + {len(_BACKEND)}"
    figures = {
        "two spans, no attribute": cost(_spans(None, None, True)),
        f"two spans, the fewest the issue asks ({fewest})": cost(_spans(_MINIMUM, _BACKEND, True)),
        f"two spans, as shipped with a session.id ({shipped})": cost(_spans(_SHIPPED, _BACKEND, True)),
    }
    bare = cost(_spans(None, None, False))
    for kind, value in (("string", "chat"), ("int", 12), ("bool", True), ("string[1]", ("stop",))):
        eight = {f"gen_ai.attribute.{n}": value for n in range(8)}
        figures[f"one {kind} attribute"] = (cost(_spans(eight, None, False)) - bare) / 8
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The CPU tracing adds to a request (in-process).")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--waits", type=int, default=0, help="stages that wait, as Redis calls (0-4)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument("--floor", action="store_true", help="the SDK's encoder alone, per request")
    args = parser.parse_args(argv)
    if args.floor:
        print("The SDK's encode_spans alone, CPU per request (batches of 512):")
        for label, us in encoder_floor().items():
            print(f"  {label}: {us:.2f} µs")
        return
    figures = measure(args.requests, args.rounds, args.waits)
    print(f"tracing, {figures.requests} requests a round: " + line(figures))
    if args.json is not None:
        args.json.write_text(json.dumps({**asdict(figures), "verdict": figures.verdict}, indent=2))


if __name__ == "__main__":
    main()
