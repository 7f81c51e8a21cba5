"""The limiter's pipelined Redis connection: every caller gets its own reply, whatever else happens."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from citadel_proxy.config.schema import Redis
from citadel_proxy.redis_lean import LeanRedis
from tests.ratelimit.conftest import OwnRedis, redis_client, start_redis


async def test_concurrent_callers_each_get_their_own_reply(client: LeanRedis, redis_prefix: str) -> None:
    key = f"{redis_prefix}count"
    replies = await asyncio.gather(*(client.execute("INCR", key) for _ in range(300)))
    assert sorted(replies) == list(range(1, 301))
    # Written in order on one connection, answered in order: the n-th caller got the n-th increment.
    assert replies == list(range(1, 301))


async def test_a_caller_that_gives_up_does_not_shift_replies(client: LeanRedis, redis_prefix: str) -> None:
    key = f"{redis_prefix}k"
    await client.execute("SET", key, "value")
    abandoned = asyncio.ensure_future(client.execute("INCR", f"{redis_prefix}n"))
    await asyncio.sleep(0)  # written, not yet answered
    abandoned.cancel()
    assert await client.execute("GET", key) == b"value"
    assert await client.execute("GET", f"{redis_prefix}n") == b"1"  # it ran; its reply was dropped


async def test_an_error_reply_fails_only_its_caller(client: LeanRedis, redis_prefix: str) -> None:
    key = f"{redis_prefix}text"
    await client.execute("SET", key, "not a number")
    results = await asyncio.gather(
        client.execute("INCR", key), client.execute("GET", key), return_exceptions=True
    )
    assert isinstance(results[0], ResponseError) and "not an integer" in str(results[0])
    assert results[1] == b"not a number"


async def test_a_script_unknown_to_redis_is_sent_whole_once(client: LeanRedis, redis_prefix: str) -> None:
    script = client.register_script("return {KEYS[1], ARGV[1], 7}")
    await client.execute("SCRIPT", "FLUSH")
    assert await script(keys=[f"{redis_prefix}a"], args=["x"]) == [f"{redis_prefix}a".encode(), b"x", 7]
    assert await client.execute("SCRIPT", "EXISTS", script._sha) == [1]
    assert await script(keys=[f"{redis_prefix}b"], args=[1]) == [f"{redis_prefix}b".encode(), b"1", 7]


async def test_a_connection_killed_by_redis_is_replaced(client: LeanRedis, redis_url: str) -> None:
    own_id = await client.execute("CLIENT", "ID")
    killer = redis_client(redis_url)
    try:
        assert await killer.execute("CLIENT", "KILL", "ID", own_id) == 1
    finally:
        await killer.aclose()
    await asyncio.sleep(0.05)  # the close reaches us
    assert await client.execute("CLIENT", "ID") != own_id


async def test_waiting_callers_fail_fast_when_redis_dies(own_redis: OwnRedis) -> None:
    client = redis_client(own_redis.url)
    try:
        await client.execute("PING")
        blocked = asyncio.ensure_future(client.execute("BLPOP", "never", 0))  # waits for a push
        await asyncio.sleep(0.05)
        own_redis.kill()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(blocked, 2)
        with pytest.raises(OSError):  # nothing listens any more: refused, not a hang
            await client.execute("PING")
    finally:
        await client.aclose()


async def test_a_stalled_connection_fails_its_callers_and_is_replaced() -> None:
    """A server that accepts and never answers: each caller gets TimeoutError from the client itself
    (reply_timeout_s), and the next command goes out on a new connection."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = LeanRedis("127.0.0.1", port, reply_timeout_s=0.2)
    try:
        first = asyncio.gather(client.execute("PING"), client.execute("PING"), return_exceptions=True)
        results = await asyncio.wait_for(first, 5)  # the bound is the client's; 5 s only stops a hang
        assert all(isinstance(r, TimeoutError) for r in results)
        assert len(accepted) == 1
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.execute("PING"), 5)
        assert len(accepted) == 2  # the stalled connection was dropped
    finally:
        await client.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_password_and_database_are_sent_on_connect() -> None:
    server = start_redis("--requirepass", "s3cret")
    try:
        url = server.url.rsplit("/", 1)[0]
        host, port = url.removeprefix("redis://").split(":")
        refused = LeanRedis(host, int(port))
        with pytest.raises(ResponseError, match="NOAUTH"):
            await refused.execute("PING")
        await refused.aclose()
        wrong = LeanRedis(host, int(port), password="wrong")
        with pytest.raises(ResponseError):
            await wrong.execute("PING")
        await wrong.aclose()
        client = LeanRedis(host, int(port), password="s3cret", database=5)
        try:
            assert await client.execute("PING") == b"PONG"
            assert b"db=5" in await client.execute("CLIENT", "INFO")
        finally:
            await client.aclose()
    finally:
        server.kill()


async def test_callers_share_one_connect_attempt_and_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    attempts = 0

    async def unanswered(*_args: object, **_kwargs: object) -> object:  # a Redis host that drops SYNs
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    monkeypatch.setattr(loop, "create_connection", unanswered)
    client = LeanRedis("192.0.2.1", 6379, connect_timeout_s=0.2)
    try:
        started = loop.time()
        results = await asyncio.gather(*(client.execute("PING") for _ in range(5)), return_exceptions=True)
        waited = loop.time() - started
    finally:
        await client.aclose()
    assert all(isinstance(r, TimeoutError) for r in results)
    assert attempts == 1 and waited < 0.5  # not one 0.2 s attempt after another


def test_connecting_is_bounded_by_the_reply_timeout() -> None:
    client = LeanRedis.from_settings(Redis(socket_connect_timeout=5.0), reply_timeout_s=0.25)
    assert client._connect_timeout_s == 0.25
