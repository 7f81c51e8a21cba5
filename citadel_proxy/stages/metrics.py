"""The `metrics` stage: counts each request, its timings and tokens once it has ended, streamed or not.

List it before `auth`, `rate_limit` and `cache` so that refusals and cache hits are counted too. Time to
first token and tokens per second describe Ollama's work, so cache hits stay out of them and out of the
token counters; they are counted as requests. Refusals by a rate limit are counted here, from the
`RateLimited` error that passes through, so the rate_limit stage does not count them itself. Requests
refused before the pipeline runs (a missing key, a bad body: the route answers them before any stage) are
counted where they are answered, by `observability.refusals`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Counter

from citadel_proxy.errors import (
    DeadlineExceeded,
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamIncomplete,
    UpstreamMalformed,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from citadel_proxy.observability.metrics import OTHER_MODEL, Metrics
from citadel_proxy.observability.tally import CounterTally, HistogramTally, Tally
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.taps import TappedStream, tapped
from citadel_proxy.pipeline.types import CLIENT_CLOSED_STATUS, Context, Delta, Reply

if TYPE_CHECKING:
    from citadel_proxy.services import Services

# Stages whose answers the metrics stage must see to count them.
_COUNTED_STAGES = ("auth", "rate_limit", "cache")
# Error codes that say the exchange with Ollama failed (an outcome carries only the code).
_UPSTREAM_CODES = frozenset(
    cls.code
    for cls in (
        UpstreamError, UpstreamUnavailable, UpstreamMalformed, UpstreamIncomplete, UpstreamTooLarge,
        UpstreamTimeout, DeadlineExceeded,
    )
)  # fmt: skip


class MetricsSettings(StageSettings, frozen=True):
    pass


def _check(_settings: MetricsSettings, stages: Sequence[str]) -> str | None:
    position = stages.index("metrics")
    late = [name for name in stages[:position] if name in _COUNTED_STAGES]
    if late:
        return f"list metrics before {', '.join(late)}, or the requests they answer are not counted"
    return None


@dataclass(slots=True)
class _Series:
    """What one (route, model) tallies (observability/tally.py: folded into its series in bulk)."""

    _tally: Tally
    _by_status: Counter
    _labels: tuple[str, str]
    duration: HistogramTally
    time_to_first_token: HistogramTally
    tokens_per_second: HistogramTally
    prompt_tokens: CounterTally
    completion_tokens: CounterTally
    _requests: dict[int, CounterTally] = field(default_factory=dict)

    def requests(self, status: int) -> CounterTally:
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self._tally.counter(
                self._by_status.labels(*self._labels, str(status))
            )
        return child


class MetricsStage:
    def __init__(self, metrics: Metrics, models: frozenset[str]) -> None:
        self._metrics = metrics
        self._models = models
        # Label children per (route, model), looked up once: labels() costs more than the tally's add.
        self._series: dict[tuple[str, str], _Series] = {}
        self._active_streams = metrics.tally.gauge(metrics.active_streams)

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        try:
            reply = await call_next(ctx)
        except GatewayError as exc:
            self.record(ctx, exc.status, exc)
            raise
        except asyncio.CancelledError:
            self.record(ctx, CLIENT_CLOSED_STATUS, None)
            raise
        except BaseException:
            self.record(ctx, 500, None)
            raise
        if reply.stream is None:
            self.record(ctx, ctx.outcome.status, None, reply)
            return reply
        self._active_streams.inc()
        stream = tapped(reply)
        stream.add(Metered(ctx, self, stream), batches=False)
        return reply

    def record(
        self,
        ctx: Context,
        status: int,
        error: GatewayError | None,
        reply: Reply | None = None,
        first_batch_at: float | None = None,
        deltas: int = 0,
    ) -> None:
        """Count one finished request (called once per request, never per token)."""
        now = time.perf_counter()
        route = ctx.route
        model = ctx.model if ctx.model in self._models else OTHER_MODEL
        series = self._series.get((route, model)) or self._new_series(route, model)
        series.requests(status).inc()
        series.duration.observe(now - ctx.started)
        if error is not None:
            self._count_error(route, error.code, error)
        elif ctx.outcome.error_code is not None:
            self._count_error(route, ctx.outcome.error_code, None)
        outcome = ctx.outcome
        if outcome.cache_hit:
            return
        prompt, completion = outcome.tokens(reply.completion if reply is not None else None)
        # A stream cut short never gets Ollama's count: the deltas forwarded are the best estimate left.
        completion = completion or deltas
        if prompt:
            series.prompt_tokens.inc(prompt)
        if completion:
            series.completion_tokens.inc(completion)
        first = outcome.first_token_at or first_batch_at
        if first is None:
            return
        series.time_to_first_token.observe(max(first - ctx.started, 0.0))
        finished = outcome.finished_at or now
        if completion > 1 and finished > first:
            series.tokens_per_second.observe((completion - 1) / (finished - first))

    def _new_series(self, route: str, model: str) -> _Series:
        m = self._metrics
        tally = m.tally
        self._series[route, model] = series = _Series(
            _tally=tally,
            _by_status=m.requests,
            _labels=(route, model),
            duration=tally.histogram(m.request_duration.labels(route)),
            time_to_first_token=tally.histogram(m.time_to_first_token.labels(route)),
            tokens_per_second=tally.histogram(m.tokens_per_second.labels(route)),
            prompt_tokens=tally.counter(m.prompt_tokens.labels(route, model)),
            completion_tokens=tally.counter(m.completion_tokens.labels(route, model)),
        )
        return series

    def _count_error(self, route: str, code: str, error: GatewayError | None) -> None:
        if isinstance(error, RateLimited):
            self._metrics.rate_limited.labels(route).inc()
        elif isinstance(error, UpstreamError | DeadlineExceeded) or code in _UPSTREAM_CODES:
            self._metrics.upstream_errors.labels(code).inc()

    def stream_ended(self) -> None:
        self._active_streams.dec()


class Metered:
    """A stream's tap: counts it once closed, with the deltas its wrapper saw go by and the first's time."""

    __slots__ = ("_ctx", "_error", "_stage", "_stream")

    def __init__(self, ctx: Context, stage: MetricsStage, stream: TappedStream) -> None:
        self._ctx = ctx
        self._stage = stage
        self._stream = stream
        self._error: GatewayError | None = None

    def seen(self, batch: list[Delta]) -> None:
        """Not called: added with batches=False."""

    def ended(self, error: Exception | None) -> None:
        if error is not None:
            self._error = error if isinstance(error, GatewayError) else GatewayError("the stream failed")

    def closed(self) -> None:
        stage, error, stream = self._stage, self._error, self._stream
        stage.stream_ended()
        status = error.status if error is not None else self._ctx.outcome.status
        stage.record(self._ctx, status, error, None, stream.first_at, stream.deltas)


def _build(_settings: MetricsSettings, services: Services) -> MetricsStage:
    # Resolved names only (what ctx.model holds): a label set bounded by the configuration.
    return MetricsStage(services.metrics, frozenset(services.models.routes.values()))


STAGE = StageType(name="metrics", settings=MetricsSettings, build=_build, check=_check)
