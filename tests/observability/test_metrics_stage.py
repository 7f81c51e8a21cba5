"""The metrics stage: what one request, streamed, answered whole or failed, adds to the series."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import msgspec
import pytest

from citadel_proxy.config.models import ModelRouter
from citadel_proxy.config.schema import Config
from citadel_proxy.errors import RateLimited, UpstreamIncomplete, UpstreamUnavailable
from citadel_proxy.observability.metrics import Metrics
from citadel_proxy.pipeline.types import Completion, Context, Delta, Reply
from citadel_proxy.stages.metrics import STAGE, MetricsSettings, MetricsStage
from tests.observability.conftest import make_context

ROUTE = "/v1/chat/completions"
MODEL = "llama3:8b"


class FakeStream:
    """Batches handed out one per read; fills the outcome at the end as the upstream does."""

    def __init__(self, ctx: Context, batches: list[list[Delta]], fail: Exception | None = None) -> None:
        self._ctx = ctx
        self._batches = list(batches)
        self._fail = fail
        self.closed = False

    async def read(self) -> list[Delta] | None:
        await asyncio.sleep(0)
        if self._batches:
            if self._ctx.outcome.first_token_at is None:
                self._ctx.outcome.first_token_at = time.perf_counter()
            return self._batches.pop(0)
        if self._fail is not None:
            raise self._fail
        outcome = self._ctx.outcome
        outcome.prompt_tokens, outcome.completion_tokens = 7, 5
        outcome.finished_at = time.perf_counter()
        return None

    async def aclose(self) -> None:
        self.closed = True


def build(metrics: Metrics) -> MetricsStage:
    config = msgspec.convert({"ollama": {"models": [{"name": MODEL}]}}, Config)
    services = SimpleNamespace(metrics=metrics, models=ModelRouter.from_config(config))
    return STAGE.build(MetricsSettings(), services)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def drain(reply: Reply) -> list[Delta]:
    assert reply.stream is not None
    out: list[Delta] = []
    try:
        while (batch := await reply.stream.read()) is not None:
            out.extend(batch)
    finally:
        await reply.stream.aclose()
    return out


async def test_streamed_reply_is_counted_when_closed() -> None:
    metrics = Metrics()
    stage = build(metrics)
    ctx = make_context()
    batches = [[Delta("a"), Delta("b")], [Delta("c")], [Delta("d"), Delta("e")]]
    inner = FakeStream(ctx, batches)

    async def handler(c: Context) -> Reply:
        return Reply(stream=inner)

    reply = await stage(ctx, handler)
    assert value(metrics, "citadel_active_streams") == 1.0
    assert value(metrics, "citadel_requests_total", route=ROUTE, model=MODEL, status="200") == 0.0
    assert [d.content for d in await drain(reply)] == list("abcde")
    assert inner.closed
    await reply.stream.aclose()  # type: ignore[union-attr]  # a second close counts nothing more
    assert value(metrics, "citadel_active_streams") == 0.0
    assert value(metrics, "citadel_requests_total", route=ROUTE, model=MODEL, status="200") == 1.0
    assert value(metrics, "citadel_prompt_tokens_total", route=ROUTE, model=MODEL) == 7.0
    assert value(metrics, "citadel_completion_tokens_total", route=ROUTE, model=MODEL) == 5.0
    assert value(metrics, "citadel_time_to_first_token_seconds_count", route=ROUTE) == 1.0
    assert value(metrics, "citadel_tokens_per_second_count", route=ROUTE) == 1.0
    assert value(metrics, "citadel_request_duration_seconds_count", route=ROUTE) == 1.0


async def test_stream_failing_midway_counts_its_error() -> None:
    metrics = Metrics()
    stage = build(metrics)
    ctx = make_context()
    inner = FakeStream(
        ctx, [[Delta("a")], [Delta("b")]], fail=UpstreamIncomplete("stream ended without done")
    )

    async def handler(c: Context) -> Reply:
        return Reply(stream=inner)

    reply = await stage(ctx, handler)
    with pytest.raises(UpstreamIncomplete):
        await drain(reply)
    assert value(metrics, "citadel_requests_total", route=ROUTE, model=MODEL, status="502") == 1.0
    assert value(metrics, "citadel_upstream_errors_total", kind="upstream_incomplete") == 1.0
    # Ollama never said how many tokens it made: the two deltas forwarded stand in.
    assert value(metrics, "citadel_completion_tokens_total", route=ROUTE, model=MODEL) == 2.0
    assert value(metrics, "citadel_active_streams") == 0.0


async def test_cancelled_read_is_no_failure() -> None:
    metrics = Metrics()
    stage = build(metrics)
    ctx = make_context()
    gate = asyncio.Event()

    class Slow(FakeStream):
        async def read(self) -> list[Delta] | None:
            await gate.wait()
            return await super().read()

    async def handler(c: Context) -> Reply:
        return Reply(stream=Slow(ctx, [[Delta("a")]]))

    reply = await stage(ctx, handler)
    assert reply.stream is not None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await reply.stream.read()
    gate.set()
    assert [d.content for d in await drain(reply)] == ["a"]
    assert value(metrics, "citadel_requests_total", route=ROUTE, model=MODEL, status="200") == 1.0


async def test_error_from_inner_handler_is_counted_and_reraised() -> None:
    metrics = Metrics()
    stage = build(metrics)

    async def unavailable(c: Context) -> Reply:
        raise UpstreamUnavailable("cannot connect to Ollama")

    async def limited(c: Context) -> Reply:
        raise RateLimited("slow down", headers={"Retry-After": "3"})

    with pytest.raises(UpstreamUnavailable):
        await stage(make_context(), unavailable)
    with pytest.raises(RateLimited):
        await stage(make_context(), limited)
    assert value(metrics, "citadel_requests_total", route=ROUTE, model=MODEL, status="502") == 1.0
    assert value(metrics, "citadel_upstream_errors_total", kind="upstream_unavailable") == 1.0
    assert value(metrics, "citadel_requests_total", route=ROUTE, model=MODEL, status="429") == 1.0
    assert value(metrics, "citadel_rate_limited_total", route=ROUTE) == 1.0
    assert value(metrics, "citadel_active_streams") == 0.0


async def test_whole_completion_and_unknown_model_label() -> None:
    metrics = Metrics()
    stage = build(metrics)
    ctx = make_context(stream=False, model="made-up-model-from-a-client")

    async def handler(c: Context) -> Reply:
        return Reply(completion=Completion(content="hi", prompt_tokens=3, completion_tokens=2))

    await stage(ctx, handler)
    assert value(metrics, "citadel_requests_total", route=ROUTE, model="other", status="200") == 1.0
    assert value(metrics, "citadel_prompt_tokens_total", route=ROUTE, model="other") == 3.0
    # No first token time for a whole answer: nothing to put in the latency histograms but the duration.
    assert value(metrics, "citadel_time_to_first_token_seconds_count", route=ROUTE) == 0.0
    assert value(metrics, "citadel_request_duration_seconds_count", route=ROUTE) == 1.0


def test_check_wants_metrics_before_refusing_stages() -> None:
    assert STAGE.check is not None
    assert STAGE.check(MetricsSettings(), ["metrics", "auth", "rate_limit"]) is None
    problem = STAGE.check(MetricsSettings(), ["auth", "metrics", "chunking"])
    assert problem is not None
    assert "auth" in problem
