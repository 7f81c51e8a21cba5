"""The lean upstream client: keep-alive reuse, and a stale pooled connection retried once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from citadel_proxy.upstream import lean
from citadel_proxy.upstream.lean import LeanError, LeanPool
from tests.fakes.ollama import Behavior, FakeOllama

BODY = b'{"model":"phi3","messages":[{"role":"user","content":"x"}]}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: 2\r\n\r\n{}"


async def read_all(pool: LeanPool) -> tuple[int, bytes, object]:
    response = await pool.post("/api/chat", BODY)
    data = b""
    while chunk := await response.readany():
        data += chunk
    status = response.status
    response.release()
    return status, data, response


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive: ANSWER to every request, until the client closes."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(ANSWER)
    writer.close()


@contextlib.asynccontextmanager
async def pool_against(handle: Handler, read_timeout_s: float) -> AsyncIterator[LeanPool]:
    """A lean pool in front of a raw server that answers with `handle`."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = LeanPool("127.0.0.1", port, limit=4, connect_timeout_s=2, read_timeout_s=read_timeout_s)
    try:
        yield pool
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


async def test_connections_are_reused_and_errors_keep_their_status() -> None:
    async with FakeOllama(behavior=Behavior.counted(3)) as fake:
        pool = LeanPool("127.0.0.1", fake.port, limit=4, connect_timeout_s=2, read_timeout_s=10)
        try:
            first = await read_all(pool)
            second = await read_all(pool)
            assert first[0] == second[0] == 200 and b'"done":true' in second[1]
            assert first[2] is second[2]  # the same pooled connection
            missing = await pool.post("/api/chat", BODY.replace(b"phi3", b"llama9"))
            assert missing.status == 404 and b"not found" in await missing.read(1000)
            missing.release()
        finally:
            await pool.close()


async def test_a_pooled_connection_closed_by_the_server_is_retried_once() -> None:
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        connection_requests = 0
        while await reader.readuntil(b"\r\n\r\n"):
            await reader.readexactly(len(BODY))
            connection_requests += 1
            if connection_requests == 2:
                writer.close()  # an idle timeout that struck just as the request went out
                return
            served += 1
            writer.write(ANSWER)
            await writer.drain()

    async with pool_against(handle, read_timeout_s=5) as pool:
        assert (await read_all(pool))[:2] == (200, b"{}")
        assert (await read_all(pool))[:2] == (200, b"{}")  # first try on the stale one, then a new one
        assert served == 2


async def test_silence_beyond_the_read_timeout_fails_the_request() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with pool_against(mute, read_timeout_s=0.2) as pool:
        with pytest.raises(LeanError, match="sent nothing"):
            await pool.post("/api/chat", BODY)


async def test_a_reader_that_falls_behind_is_not_taken_for_a_silent_ollama() -> None:
    """Reading pauses while the reader is behind (the client is slow); that pause is not Ollama's silence."""
    lines = b"".join(b'{"message":{"content":"%d"},"done":false}\n' % i for i in range(20_000))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n" % len(lines)

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + lines)
        await writer.drain()
        await asyncio.sleep(5)

    async with pool_against(flood, read_timeout_s=0.2) as pool:
        response = await pool.post("/api/chat", BODY)
        await asyncio.sleep(0.6)  # a slow client: three silence limits without reading
        data = b""
        while chunk := await response.readany():
            data += chunk
        assert data == lines
        response.release()


async def test_idle_connections_past_the_cap_are_closed_only_once_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of answers ending together leaves more idle connections than the cap: they are kept for
    the requests that follow (no reconnect), and only those left unused are closed later, a few at a
    time."""
    monkeypatch.setattr(lean, "_MAX_IDLE", 2)
    monkeypatch.setattr(lean, "_SURPLUS_IDLE_S", 0.05)
    monkeypatch.setattr(lean, "_TRIM_AT_ONCE", 1)  # one a callback: the rest in the callbacks after
    accepted = 0

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await answer_each(reader, writer)

    async with pool_against(keep_alive, read_timeout_s=10) as pool:
        responses = [await pool.post("/api/chat", BODY) for _ in range(4)]  # 4 at once: 4 connections
        for response in responses:
            await response.read(1000)
            response.release()
        assert [r.usable for r in responses] == [True] * 4  # past the cap, but kept for now
        for _ in range(4):
            await read_all(pool)
        assert accepted == 4  # the next requests took the kept connections

        async with asyncio.timeout(10):
            while True:
                if sum(r.usable for r in responses) <= 2:
                    break
                await asyncio.sleep(0.01)
        assert sum(r.usable for r in responses) == 2  # the cap, once the surplus went unused


async def test_a_closed_connection_is_freed_without_the_collector() -> None:
    """The parser keeps the connection's callbacks: let go at close, so that a held stream's connection,
    long since in the collector's oldest generation, is freed when it closes rather than at the next
    full collection."""
    async with pool_against(answer_each, read_timeout_s=10) as pool:
        kept = await read_all(pool)
        mid_answer = await pool.post("/api/chat", BODY)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            mid_answer.close()  # a busy one, its answer not read
            await pool.close()  # the idle one
            del kept, mid_answer
            for _ in range(3):  # connection_lost comes on a later turn of the loop
                await asyncio.sleep(0)
            gc.collect()
            assert not [o for o in gc.garbage if isinstance(o, lean.LeanResponse)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
