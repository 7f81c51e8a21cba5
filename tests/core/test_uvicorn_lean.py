"""uvicorn's protocol with lean per-connection objects (http.uvicorn_lean): they are in use, and what
goes through them still works: a client that reads slowly (paused writes), pipelined requests, a body
that arrives in pieces, a client that leaves."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citadel_proxy.http import uvicorn_guard
from citadel_proxy.http.uvicorn_guard import GuardedHttpToolsProtocol
from citadel_proxy.http.uvicorn_lean import LeanFlowControl, LightEvent
from citadel_proxy.http.uvicorn_send import OnePassCycle
from tests.core.conftest import REPO, TEST_KEY, Gateway, running_gateway, write_config
from tests.fakes.ollama import Behavior, FakeOllama, counted_tokens


@pytest.fixture
async def gw(fake: FakeOllama, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = write_config(tmp_path, fake.port, REPO / "pipelines")
    async with running_gateway(config, fake, server="uvicorn") as gateway:
        yield gateway


def _port(gw: Gateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def _chat(body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TEST_KEY}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )


def _stream_request(tokens: int) -> dict[str, object]:
    return {"model": "phi3", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": tokens}  # fmt: skip


async def test_a_light_event_given_its_loop_does_not_look_it_up(monkeypatch: pytest.MonkeyPatch) -> None:
    event = LightEvent(loop=asyncio.get_running_loop())

    def looked_up() -> asyncio.AbstractEventLoop:
        raise AssertionError("the running loop looked up")

    monkeypatch.setattr(asyncio, "get_running_loop", looked_up)
    waiter = event.wait()
    event.set()
    assert await waiter is True


async def test_light_event_wakes_every_waiter_and_forgets_cancelled_ones() -> None:
    event = LightEvent()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    cancelled = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    late = asyncio.ensure_future(event.wait())  # drops the cancelled waiter
    assert event._waiters is not None and len(event._waiters) == 4
    assert not event.is_set()
    event.set()
    assert await asyncio.gather(*waiters, late) == [True, True, True, True]
    assert event._waiters == []
    event.clear()
    assert not event.is_set()
    assert await LightEvent(True).wait() is True
    # A waiting task that is cancelled leaves the event usable.
    again = asyncio.create_task(_wait(event))
    await asyncio.sleep(0)
    again.cancel()
    await asyncio.sleep(0)
    event.set()
    assert again.cancelled() and await event.wait() is True


async def _wait(event: LightEvent) -> bool:
    return await event.wait()


async def test_lean_flow_control_pauses_and_resumes() -> None:
    class Transport:
        reading = True

        def pause_reading(self) -> None:
            self.reading = False

        def resume_reading(self) -> None:
            self.reading = True

    transport = Transport()
    flow = LeanFlowControl(transport)  # type: ignore[arg-type]
    await flow.drain()
    flow.pause_reading()
    assert flow.read_paused and not transport.reading
    flow.resume_reading()
    assert not flow.read_paused and transport.reading
    flow.pause_writing()
    drained = asyncio.create_task(flow.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    flow.resume_writing()
    await asyncio.wait_for(drained, 1)


async def test_a_held_stream_uses_the_lean_objects(gw: Gateway, fake: FakeOllama) -> None:
    fake.behavior = Behavior.counted(50, token_delay_s=0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(gw))
    try:
        writer.write(_chat(_stream_request(50)))
        assert b"data: {" in await asyncio.wait_for(reader.readuntil(b"data: {"), 5)
        protocols = [o for o in gc.get_objects() if isinstance(o, GuardedHttpToolsProtocol)]
        held = [p for p in protocols if p.cycle is not None and not p.cycle.response_complete]
        assert len(held) == 1
        assert type(held[0].flow) is LeanFlowControl
        assert type(held[0].cycle.message_event) is LightEvent
        assert held[0].cycle.message_event._loop is held[0].loop  # no lookup per wait
        assert held[0].cycle.flow is held[0].flow
        assert isinstance(held[0].cycle, OnePassCycle)  # http.uvicorn_send writes its head and events
        assert not hasattr(held[0], "__dict__") or "_head_pending" not in held[0].__dict__
    finally:
        writer.close()


async def test_a_slow_reader_gets_the_whole_stream(gw: Gateway, fake: FakeOllama) -> None:
    # Far more than the socket and transport buffers hold: uvicorn pauses writing until the client reads.
    fake.behavior = Behavior.counted(20000, tokens_per_write=500)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(gw))
    try:
        writer.write(_chat(_stream_request(20000)))
        await asyncio.sleep(0.5)
        seen = bytearray()
        while b"data: [DONE]" not in seen:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, "the stream ended early"
            seen += chunk
    finally:
        writer.close()
    text = seen.decode()
    content = "".join(
        json.loads(line[len("data: ") :])["choices"][0]["delta"].get("content") or ""
        for line in text.split("\n")
        if line.startswith("data: {")
    )
    assert content == "".join(counted_tokens(20000))


async def test_pipelined_requests_and_a_body_in_pieces_are_answered(gw: Gateway, fake: FakeOllama) -> None:
    fake.behavior = Behavior.counted(3)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(gw))
    try:
        request = _chat({"model": "phi3", "messages": [{"role": "user", "content": "hi"}]})
        # Two requests in one write, then a third whose body comes in two writes.
        writer.write(request + request)
        head, body = request.split(b"\r\n\r\n", 1)
        await asyncio.sleep(0.1)
        writer.write(head + b"\r\n\r\n" + body[:5])
        await asyncio.sleep(0.2)
        writer.write(body[5:])
        answers = 0
        seen = b""
        while answers < 3:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, f"closed after {answers} answers: {seen[-300:]!r}"
            seen += chunk
            answers = seen.count(b"HTTP/1.1 200 OK")
        assert seen.count(b"w0 w1 w2 ") == 3 or seen.count(b'"content":"w0 w1 w2 "') == 3
    finally:
        writer.close()


async def test_a_client_that_leaves_ends_its_stream(gw: Gateway, fake: FakeOllama) -> None:
    fake.behavior = Behavior.counted(600, token_delay_s=0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(gw))
    writer.write(_chat(_stream_request(600)))
    await asyncio.wait_for(reader.readuntil(b"data: {"), 5)
    writer.close()
    # The disconnect is seen through the request's message event: Ollama's request is closed.
    (record,) = await fake.wait_streams(1)
    await asyncio.wait_for(record.disconnect_event.wait(), 5)


def test_the_keep_alive_wait_is_the_guards_with_this_uvicorn() -> None:
    # A uvicorn whose on_response_complete changed keeps its timer per response: this says so.
    assert uvicorn_guard._KEEP_ALIVE_COVERED
