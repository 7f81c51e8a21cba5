"""A client leaving or not reading: the upstream is closed at once, and memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp

from tests.core.conftest import AUTH, CHAT, TEST_KEY, Gateway
from tests.fakes.ollama import Behavior


async def test_client_leaving_a_stream_closes_the_upstream_within_a_second(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(100, token_delay_s=0.05))
    async with aiohttp.ClientSession(headers=AUTH) as session:
        response = await session.post(gateway.url + "/v1/voice/chat/completions", json=CHAT)
        await response.content.readuntil(b"\n\n")
        response.close()  # drop the connection mid-stream
    record = (await gateway.fake.wait_streams(1))[-1]
    await asyncio.wait_for(record.disconnect_event.wait(), timeout=1.0)
    assert record.lines_written < 100


async def test_client_leaving_while_waiting_for_a_whole_answer_closes_the_upstream(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(3, first_token_delay_s=10))
    async with aiohttp.ClientSession(headers=AUTH) as session:
        request = asyncio.create_task(session.post(gateway.url + "/v1/chat/completions", json=CHAT))
        record = (await gateway.fake.wait_streams(1))[-1]
        request.cancel()
    await asyncio.wait_for(record.disconnect_event.wait(), timeout=1.0)


async def test_client_leaving_while_the_model_loads_closes_the_upstream(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(3, first_token_delay_s=10))
    async with aiohttp.ClientSession(headers=AUTH) as session:
        response = await session.post(gateway.url + "/v1/voice/chat/completions", json=CHAT)
        assert await response.content.readuntil(b"\n\n") == b": keep-alive\n\n"
        response.close()
    record = (await gateway.fake.wait_streams(1))[-1]
    await asyncio.wait_for(record.disconnect_event.wait(), timeout=1.0)


async def test_a_client_that_does_not_read_stops_the_gateway_reading_ollama(gateway: Gateway) -> None:
    token = "x" * 10_000
    total_bytes = 10_000 * len(token)  # about 100 MB if nothing held it back
    gateway.fake.next(Behavior(tokens=[token] * 10_000))
    port = int(gateway.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    body = json.dumps(CHAT).encode()
    request = (
        b"POST /v1/voice/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TEST_KEY.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await loop.sock_sendall(sock, request)
    record = (await gateway.fake.wait_streams(1))[-1]
    # Wait until the fake's writes stall, then check they stay stalled: the gateway stopped reading.
    previous = -1
    for _ in range(50):
        await asyncio.sleep(0.2)
        if record.bytes_written == previous and record.writing:
            break
        previous = record.bytes_written
    await asyncio.sleep(0.5)
    assert record.writing and record.bytes_written == previous
    assert record.bytes_written < total_bytes / 4
    sock.close()
    await asyncio.wait_for(record.disconnect_event.wait(), timeout=5.0)
