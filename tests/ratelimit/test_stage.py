"""The rate_limit stage: headers on success, 429 over the limit, tokens charged once an answer is done."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from citadel_proxy.errors import RateLimited
from citadel_proxy.http.responses import error_response
from citadel_proxy.pipeline.types import Completion, Context, Delta, Principal, Reply
from citadel_proxy.ratelimit import LocalLimiter, RateLimiter, RedisLimiter
from citadel_proxy.ratelimit.bucket import Limits
from citadel_proxy.stages.rate_limit import STAGE, RateLimitSettings, check
from tests.auth.conftest import make_ctx
from tests.ratelimit.conftest import OwnRedis, redis_client

HEADERS = ("limit", "remaining", "reset")


def stage(limiter: RateLimiter, **settings: int) -> object:
    return STAGE.build(RateLimitSettings(**settings), SimpleNamespace(rate_limiter=limiter))  # type: ignore[arg-type]


def ctx_for(principal: Principal | None = None, client: str = "10.0.0.1") -> Context:
    ctx = make_ctx(client=client)
    ctx.principal = principal
    return ctx


async def answer(ctx: Context) -> Reply:
    ctx.outcome.prompt_tokens, ctx.outcome.completion_tokens = 30, 70
    return Reply(completion=Completion(content="ok"))


async def test_headers_on_success_and_429_over_the_limit() -> None:
    run = stage(LocalLimiter(), requests_per_minute=2, tokens_per_minute=1000)
    ctx = ctx_for()
    await run(ctx, answer)  # type: ignore[operator]
    for kind in ("requests", "tokens"):
        for name in HEADERS:
            assert f"x-ratelimit-{name}-{kind}" in ctx.response_headers
    assert ctx.response_headers["x-ratelimit-remaining-requests"] == "1"
    await run(ctx_for(), answer)  # type: ignore[operator]
    with pytest.raises(RateLimited) as caught:
        await run(ctx_for(), answer)  # type: ignore[operator]
    response = error_response(caught.value)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-limit-tokens"] == "1000"
    assert b"rate_limit_exceeded" in response.body


async def test_the_lower_of_key_and_pipeline_limits_wins() -> None:
    limiter = LocalLimiter()
    ctx = ctx_for(Principal("k", frozenset({"inference"}), requests_per_minute=5, tokens_per_minute=50))
    await stage(limiter, requests_per_minute=20, tokens_per_minute=100)(ctx, answer)  # type: ignore[operator]
    assert ctx.response_headers["x-ratelimit-limit-requests"] == "5"
    assert ctx.response_headers["x-ratelimit-limit-tokens"] == "50"
    ctx = ctx_for(Principal("k", frozenset({"inference"}), requests_per_minute=5))
    await stage(limiter, requests_per_minute=3)(ctx, answer)  # type: ignore[operator]
    assert ctx.response_headers["x-ratelimit-limit-requests"] == "3"
    assert "x-ratelimit-limit-tokens" not in ctx.response_headers


async def test_a_key_whose_limits_change_is_held_to_its_new_limits() -> None:
    # The stage remembers a key's limits by its name: a key record changed since (its limits lowered,
    # or revoked and created again under the same name) is a new Principal and is worked out again.
    run = stage(LocalLimiter(), requests_per_minute=100)
    before = Principal("k", frozenset({"inference"}), requests_per_minute=50)
    after = Principal("k", frozenset({"inference"}), requests_per_minute=7)
    for principal, limit in ((before, "50"), (after, "7"), (before, "50")):
        ctx = ctx_for(principal)
        await run(ctx, answer)  # type: ignore[operator]
        assert ctx.response_headers["x-ratelimit-limit-requests"] == limit
    # An equal Principal (a key looked up again from the database) counts against the same buckets.
    ctx = ctx_for(Principal("k", frozenset({"inference"}), requests_per_minute=50))
    await run(ctx, answer)  # type: ignore[operator]
    assert ctx.response_headers["x-ratelimit-remaining-requests"] == "46"  # the fourth of 50


async def test_anonymous_callers_are_counted_per_ip_and_keys_per_key() -> None:
    run = stage(LocalLimiter(), requests_per_minute=1)
    await run(ctx_for(client="10.0.0.1"), answer)  # type: ignore[operator]
    await run(ctx_for(client="10.0.0.2"), answer)  # type: ignore[operator]
    await run(ctx_for(Principal("k", frozenset()), client="10.0.0.1"), answer)  # type: ignore[operator]
    with pytest.raises(RateLimited):
        await run(ctx_for(client="10.0.0.1"), answer)  # type: ignore[operator]


async def test_no_limits_no_headers() -> None:
    ctx = ctx_for()
    await stage(LocalLimiter())(ctx, answer)  # type: ignore[operator]
    assert ctx.response_headers == {}


async def test_tokens_of_a_whole_answer_are_charged() -> None:
    limiter = LocalLimiter()
    run = stage(limiter, tokens_per_minute=150)
    await run(ctx_for(), answer)  # type: ignore[operator]
    ctx = ctx_for()
    await run(ctx, answer)  # type: ignore[operator]
    assert ctx.response_headers["x-ratelimit-remaining-tokens"] == "50"  # 100 used by the first
    with pytest.raises(RateLimited):  # 200 used: exhausted
        await run(ctx_for(), answer)  # type: ignore[operator]


class Stream:
    """Deltas from a queue, so the test decides when each read returns."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.queue, self.closed = ctx, asyncio.Queue[list[Delta] | None](), False

    async def read(self) -> list[Delta] | None:
        batch = await self.queue.get()
        if batch is None:
            self.ctx.outcome.prompt_tokens, self.ctx.outcome.completion_tokens = 10, 40
        return batch

    async def aclose(self) -> None:
        self.closed = True


def remaining_tokens(limiter: LocalLimiter) -> int:
    window = limiter.acquire_now("ip:10.0.0.1", Limits(tokens_per_minute=1000)).tokens
    assert window is not None
    return window.remaining


async def streamed(limiter: LocalLimiter) -> tuple[Stream, Reply]:
    ctx = ctx_for()
    inner = Stream(ctx)

    async def handler(c: Context) -> Reply:
        return Reply(stream=inner)

    reply = await stage(limiter, tokens_per_minute=1000)(ctx, handler)  # type: ignore[operator]
    assert reply.stream is not None and reply.stream is not inner
    return inner, reply


async def test_a_stream_is_charged_when_it_ends_and_cancelled_reads_lose_nothing() -> None:
    limiter = LocalLimiter()
    inner, reply = await streamed(limiter)
    assert reply.stream is not None
    # The chunking stage cancels reads on a timer: a cancelled read must not lose the end of the stream.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reply.stream.read(), 0.01)
    await inner.queue.put([Delta(content="a"), Delta(content="b")])
    await inner.queue.put(None)
    assert len(await reply.stream.read() or []) == 2
    assert remaining_tokens(limiter) == 1000  # nothing charged before the end
    assert await reply.stream.read() is None
    assert remaining_tokens(limiter) == 950
    await reply.stream.aclose()
    assert inner.closed and remaining_tokens(limiter) == 950  # charged once


async def test_a_stream_closed_early_is_charged_for_what_was_generated() -> None:
    limiter = LocalLimiter()
    inner, reply = await streamed(limiter)
    assert reply.stream is not None
    await inner.queue.put([Delta(content=str(i)) for i in range(7)])
    await reply.stream.read()
    await reply.stream.aclose()  # the client left; Ollama never sent its counts
    assert inner.closed and remaining_tokens(limiter) == 993


def test_rate_limit_must_follow_auth() -> None:
    settings = RateLimitSettings()
    assert check(settings, ["rate_limit", "auth"]) is not None
    assert check(settings, ["auth", "rate_limit"]) is None
    assert check(settings, ["rate_limit"]) is None


async def test_requests_are_served_when_redis_dies_mid_test(own_redis: OwnRedis) -> None:
    client = redis_client(own_redis.url)
    limiter = RedisLimiter(client, "rl-stage:")
    try:
        run = stage(limiter, requests_per_minute=100, tokens_per_minute=10_000)
        ctx = ctx_for()
        assert (await run(ctx, answer)).completion is not None  # type: ignore[operator]
        assert ctx.response_headers["x-ratelimit-remaining-requests"] == "99"
        own_redis.kill()
        for _ in range(3):
            ctx = ctx_for()
            reply = await asyncio.wait_for(run(ctx, answer), 2)  # type: ignore[operator]
            assert reply.completion is not None and reply.completion.content == "ok"
            assert "x-ratelimit-remaining-requests" in ctx.response_headers
        assert limiter.degraded
    finally:
        await limiter.aclose()
        await client.aclose()
