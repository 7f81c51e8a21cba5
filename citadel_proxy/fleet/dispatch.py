"""Sending a request to the fleet: the best backend first, the next one when it fails before answering."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

from citadel_proxy import errors
from citadel_proxy.fleet.backend import Backend
from citadel_proxy.fleet.fleet import Fleet
from citadel_proxy.fleet.placement import candidates
from citadel_proxy.pipeline.types import Context, Delta, Reply, TokenStream
from citadel_proxy.upstream.client import OllamaClient

BACKEND_HEADER = "X-Citadel-Backend"
Send = Callable[[OllamaClient], Awaitable[Reply]]


def retryable(exc: errors.GatewayError) -> bool:
    """Failed before Ollama answered anything: unreachable, busy, 5xx, silent, cut off."""
    if isinstance(exc, errors.UpstreamUnavailable | errors.UpstreamTimeout | errors.UpstreamIncomplete):
        return True
    if isinstance(exc, errors.ServiceUnavailable):
        return exc.code == "upstream_busy"
    return type(exc) is errors.UpstreamError and exc.code == "upstream_error"


def sent_to_lone(fleet: Fleet, ctx: Context, backend: Backend) -> None:
    """What the one-Ollama path records of its backend (fleet.lone), which it sends to directly."""
    ctx.backend = backend.name
    ctx.attempts.append(backend.name)
    if fleet.options.backend_header:
        ctx.response_headers[BACKEND_HEADER] = backend.name


async def dispatch(fleet: Fleet, ctx: Context, send: Send) -> Reply:
    lone = fleet.lone
    if lone is not None:
        sent_to_lone(fleet, ctx, lone)
        return await send(lone.client)
    model = ctx.request.model
    options = fleet.options
    last: errors.GatewayError | None = None
    sticky = fleet.sticky(ctx.conversation_id)
    tried: set[str] = set()
    while len(ctx.attempts) < options.max_attempts:
        got = await _next_slot(fleet, ctx, sticky, tried, last)
        if got is None:
            break
        backend, slot, taken = got
        tried.add(backend.name)
        try:
            reply = await _attempt(fleet, ctx, backend, send)
        except errors.GatewayError as exc:
            await _free(fleet, ctx, backend, slot, taken)
            if not (retryable(exc) or (isinstance(exc, errors.ModelNotFound) and fleet.several)):
                raise
            last = exc
            continue
        except BaseException:
            await _free(fleet, ctx, backend, slot, taken)
            raise
        fleet.answered(ctx.conversation_id, backend)
        if reply.stream is not None:
            reply.stream = HeldStream(reply.stream, fleet, ctx, backend, slot, taken)
        else:
            await _free(fleet, ctx, backend, slot, taken)
        return reply
    if last is not None:
        raise last
    raise errors.ServiceUnavailable(
        f"every backend that has {model} is running all it can; try again shortly",
        code="backends_busy",
        headers={"Retry-After": str(options.retry_after_s)},
    )


Taken = tuple[Backend, object, float]


async def _next_slot(
    fleet: Fleet, ctx: Context, sticky: Backend | None, tried: set[str], last: errors.GatewayError | None
) -> Taken | None:
    """A slot on a candidate not tried yet, after a wait in the queue when all are full; None: none left."""
    model = ctx.request.model
    # Newcomers queue behind those already waiting, whatever they would find free.
    try:
        got, full = (None, True) if fleet.admission.busy(model) else await _take(fleet, model, sticky, tried)
    except errors.GatewayError:
        if last is not None:
            return None  # the backends left are failing now: the failure already seen is the answer
        raise
    if got is not None or not full:
        return got
    pipeline = ctx.pipeline
    left_s = pipeline.timeout_s - (time.perf_counter() - ctx.started)
    pending = fleet.admission.wait(
        model,
        pipeline.name,
        _who(ctx),
        pipeline.priority,
        min(pipeline.max_queue_ms / 1000, left_s),
        fleet.placement.capacity(model),
        functools.partial(_start, fleet, model, sticky, tried),
    )
    trace = ctx.trace
    try:
        got, waited_s = await (pending if trace is None else trace.waited("queue wait", pending))
    except errors.ServiceUnavailable:
        fleet.metrics.queue_refused.labels(pipeline.name).inc()
        if last is not None and not isinstance(last, errors.ModelNotFound):
            raise last from None
        raise
    fleet.metrics.queue_wait_of(pipeline.name).observe(waited_s)
    return got


async def _take(
    fleet: Fleet, model: str, sticky: Backend | None, tried: set[str]
) -> tuple[Taken | None, bool]:
    """A slot on the best candidate not tried yet, and whether one was passed over for being full."""
    full = False
    for backend in candidates(fleet.placement, model, sticky, fleet.options.retry_after_s):
        if backend.name in tried:
            continue
        slot = await fleet.slots.take(backend)
        if slot is None:
            full = True
            continue  # full: the next candidate
        if not backend.breaker.enter():
            await fleet.slots.give(backend, slot)
            continue
        return (backend, slot, time.perf_counter()), full
    return None, full


async def _start(fleet: Fleet, model: str, sticky: Backend | None, tried: set[str]) -> Taken | None:
    """A queued request's try for a slot."""
    return (await _take(fleet, model, sticky, tried))[0]


def _who(ctx: Context) -> str:
    return ctx.principal.name if ctx.principal is not None else ctx.client


async def _attempt(fleet: Fleet, ctx: Context, backend: Backend, send: Send) -> Reply:
    if ctx.attempts:
        fleet.by_name[ctx.attempts[-1]].series.failovers.inc()
    ctx.attempts.append(backend.name)
    series = backend.series
    series.in_flight.inc()
    started = time.perf_counter()
    try:
        reply = await send(backend.client)
    except errors.GatewayError as exc:
        if retryable(exc):
            backend.breaker.failed()
            backend.saw_error(exc.message)
            series.failed.inc()
        else:
            backend.breaker.succeeded()  # it answered: a refusal is no sign of ill health
            series.refused.inc()
        raise
    backend.breaker.succeeded()
    backend.saw_latency(time.perf_counter() - started)
    series.ok.inc()
    ctx.backend = backend.name
    if fleet.options.backend_header:
        ctx.response_headers[BACKEND_HEADER] = backend.name
    return reply


async def _free(fleet: Fleet, ctx: Context, backend: Backend, slot: object, taken: float) -> None:
    backend.series.in_flight.dec()
    first = ctx.outcome.first_token_at
    if ctx.backend == backend.name:
        fleet.admission.served(ctx.request.model, time.perf_counter() - taken)
        if first is not None:
            backend.series.time_to_first_token.observe(first - ctx.started)
    await fleet.slots.give(backend, slot)
    fleet.admission.freed()


class HeldStream:
    """A backend's stream that keeps its slot until closed, and tells the breaker if the stream breaks."""

    __slots__ = ("_backend", "_ctx", "_fleet", "_inner", "_slot", "_taken")

    def __init__(
        self, inner: TokenStream, fleet: Fleet, ctx: Context, backend: Backend, slot: object, taken: float
    ) -> None:
        self._inner, self._fleet, self._ctx, self._backend, self._slot = inner, fleet, ctx, backend, slot
        self._taken = taken

    async def read(self) -> list[Delta] | None:
        try:
            return await self._inner.read()
        except errors.GatewayError as exc:
            if retryable(exc):
                self._backend.breaker.failed()
                self._backend.saw_error(exc.message)
            raise

    async def aclose(self) -> None:
        slot, self._slot = self._slot, None
        try:
            await self._inner.aclose()
        finally:
            if slot is not None:
                await _free(self._fleet, self._ctx, self._backend, slot, self._taken)
