"""http.uvicorn_send against uvicorn's own send: for the same messages on the same state, the same bytes
written, the same connection state after, the same errors; a head and its body in one write, a head
alone written by the end of the loop's turn, and before anything else written to the connection; and
its limit on names remembered."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl

from citadel_proxy import errors
from citadel_proxy.http import uvicorn_send
from citadel_proxy.http.head_limits import HeadLimits
from citadel_proxy.http.uvicorn_guard import GuardedHttpToolsProtocol, guarded_httptools
from citadel_proxy.http.uvicorn_lean import LightEvent
from citadel_proxy.http.uvicorn_send import (
    JOIN_AT_MOST,
    MAX_NAMES,
    UVICORN_CYCLE,
    LoweredNames,
    OnePassCycle,
    install,
)


class Fresh(OnePassCycle):
    """With names of its own: what these tests send is not remembered for the process."""

    names = LoweredNames(OnePassCycle.names._invalid)


_DATE = [(b"date", b"Sat, 05 Dec 2026 23:59:59 GMT")]


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return False


class Flow:
    write_paused = False


def _cycle(kind: type[OnePassCycle] | type[Any], method: str = "GET", keep_alive: bool = True) -> Any:
    cycle = UVICORN_CYCLE(
        scope={"type": "http", "method": method},  # type: ignore[typeddict-item]
        transport=Transport(),  # type: ignore[arg-type]
        flow=Flow(),  # type: ignore[arg-type]
        logger=None,  # type: ignore[arg-type]
        access_logger=None,  # type: ignore[arg-type]
        access_log=False,
        default_headers=list(_DATE),
        message_event=LightEvent(),  # type: ignore[arg-type]
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: setattr(cycle, "responded", getattr(cycle, "responded", 0) + 1),
    )
    cycle.__class__ = kind
    return cycle


async def _run(cycle: Any, messages: list[dict[str, Any]]) -> tuple[Any, ...]:
    """What sending `messages` did: the bytes written, the error (type and text), the state after."""
    error = None
    for message in messages:
        try:
            await cycle.send(message)
        except Exception as exc:  # the comparison is the point: any error, the same on both sides
            error = (type(exc).__name__, str(exc))
            break
    await asyncio.sleep(0)  # a head held back goes out by the end of the loop's turn
    return (
        b"".join(cycle.transport.written),
        error,
        cycle.transport.closed,
        cycle.response_started,
        cycle.response_complete,
        cycle.keep_alive,
        cycle.chunked_encoding,
        cycle.expected_content_length,
        cycle.message_event.is_set(),
        getattr(cycle, "responded", 0),
    )


def _start(headers: Any, status: int = 200) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _body(body: bytes = b"", more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": more}


def _header_pairs() -> Iterator[tuple[bytes, bytes]]:
    yield (b"content-length", b"2")


_JSON = [(b"content-length", b"2"), (b"content-type", b"application/json")]
_AUDITED = [(b"x-ratelimit-limit-requests", b"600"), (b"x-ratelimit-remaining-requests", b"599"),
            (b"x-ratelimit-reset-requests", b"100ms"), (b"X-Conversation-ID", b"0193a0a0-7bbb-8ccc"),
            (b"x-request-id", b"abc"), *_JSON]  # fmt: skip

CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "json answer": ({}, [_start(_AUDITED), _body(b"{}")]),
    "tuple of headers": ({}, [_start(tuple(_JSON)), _body(b"{}")]),
    "no headers key": ({}, [{"type": "http.response.start", "status": 200}, _body(b"ab"), _body()]),
    "stream, chunked by uvicorn": (
        {},
        [
            _start([(b"content-type", b"text/event-stream")]),
            _body(b"data: 1\n\n", True),
            _body(b"", True),
            _body(b"data: 2\n\n"),
        ],
    ),
    "chunked by the app": ({}, [_start([(b"Transfer-Encoding", b"Chunked")]), _body(b"x", True), _body()]),
    "length after chunked": (
        {},
        [_start([(b"transfer-encoding", b"chunked"), (b"content-length", b"9")]), _body(b"abc")],
    ),
    "connection close": ({}, [_start([(b"Connection", b"keep-alive, Close"), *_JSON]), _body(b"{}")]),
    "connection kept": ({}, [_start([(b"connection", b"keep-alive"), *_JSON]), _body(b"{}")]),
    "not keep-alive": ({"keep_alive": False}, [_start(_JSON), _body(b"{}")]),
    "HEAD": ({"method": "HEAD"}, [_start([(b"content-length", b"5")]), _body(b"ignored")]),
    "HEAD without length": ({"method": "HEAD"}, [_start([]), _body()]),
    "204": ({}, [_start([], 204), _body()]),
    "304": ({}, [_start([(b"etag", b'"x"')], 304), _body()]),
    "invalid name": ({}, [_start([(b"bad name", b"x")]), _body()]),
    "invalid name, later": ({}, [_start([*_JSON, (b"x:y", b"x")]), _body()]),
    "invalid value": ({}, [_start([(b"x-a", b"one\r\ntwo")]), _body()]),
    "invalid value, NUL": ({}, [_start([*_JSON, (b"x-a", b"\x00")]), _body()]),
    "tab in a value": ({}, [_start([(b"x-a", b"one\ttwo"), *_JSON]), _body(b"{}")]),
    "body longer than length": ({}, [_start(_JSON), _body(b"{}!")]),
    "body shorter than length": ({}, [_start(_JSON), _body(b"{")]),
    "body in parts": ({}, [_start(_JSON), _body(b"{", True), _body(b"}")]),
    "body before start": ({}, [_body(b"x")]),
    "start twice": ({}, [_start(_JSON), _start(_JSON)]),
    "body after the end": ({}, [_start(_JSON), _body(b"{}"), _body(b"x")]),
    "unknown status": ({}, [_start(_JSON, 999)]),
    "bytearray name": ({}, [_start([(bytearray(b"x-a"), b"1"), *_JSON]), _body(b"{}")]),
    "str value": ({}, [_start([(b"x-a", "1")])]),
    "not pairs": ({}, [_start([(b"x-a",)])]),
    "an iterator of headers": ({}, [_start(_header_pairs()), _body(b"ab")]),
    "memoryview body": ({}, [_start(_JSON), _body(memoryview(b"{}"))]),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_writes_what_uvicorn_writes(case: str) -> None:
    settings, messages = CASES[case]
    theirs = await _run(_cycle(UVICORN_CYCLE, **settings), messages)
    if case == "an iterator of headers":  # read once: each side gets its own
        messages = [_start(_header_pairs()), _body(b"ab")]
    assert await _run(_cycle(Fresh, **settings), messages) == theirs


async def test_a_paused_transport_goes_through_uvicorns_send() -> None:
    cycle = _cycle(Fresh)
    cycle.flow = Paused()
    await cycle.send(_start(_JSON))
    await cycle.send(_body(b"{}"))
    assert b"".join(cycle.transport.written).endswith(b"\r\n\r\n{}")
    assert cycle.response_complete


async def test_an_answers_head_goes_out_with_its_body_in_one_write() -> None:
    cycle = _cycle(Fresh)
    await cycle.send(_start(_AUDITED))
    await cycle.send(_body(b"{}"))
    (written,) = cycle.transport.written
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"\r\n\r\n{}")


async def test_a_streams_head_is_written_at_once() -> None:
    cycle = _cycle(Fresh)
    await cycle.send(_start([(b"content-type", b"text/event-stream")]))
    (head,) = cycle.transport.written
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    await cycle.send(_body(b"data: 1\n\n", True))
    assert cycle.transport.written[1:] == [b"9\r\ndata: 1\n\n\r\n"]


async def test_a_head_whose_body_is_late_goes_out_alone_at_the_end_of_the_turn() -> None:
    cycle = _cycle(Fresh)
    await cycle.send(_start(_JSON))
    assert cycle.transport.written == []
    await asyncio.sleep(0)
    (head,) = cycle.transport.written
    assert head.endswith(b"content-type: application/json\r\n\r\n")
    await cycle.send(_body(b"{}"))
    assert cycle.transport.written[1:] == [b"{}"]
    await asyncio.sleep(0)
    assert len(cycle.transport.written) == 2  # the call that would have sent the head does nothing now


async def test_a_large_body_is_not_copied_into_its_head() -> None:
    body = b"x" * (JOIN_AT_MOST + 1)
    cycle = _cycle(Fresh)
    await cycle.send(_start([(b"content-length", str(len(body)).encode())]))
    await cycle.send(_body(body))
    head, written = cycle.transport.written
    assert head.endswith(b"\r\n\r\n") and written is not None and len(written) == len(body)


async def test_a_head_for_a_closed_connection_is_dropped() -> None:
    cycle = _cycle(Fresh)
    await cycle.send(_start(_JSON))
    cycle.transport.close()
    await asyncio.sleep(0)
    assert cycle.transport.written == []


async def test_a_refusal_of_a_pipelined_request_goes_after_the_held_head() -> None:
    """The guard writes to the connection itself (a request past the head limits): a head the current
    answer holds is written first."""
    cycle = _cycle(Fresh)
    await cycle.send(_start(_JSON))

    class Protocol:
        transport = cycle.transport
        _head_timer = None
        _refused = None

        def __init__(self) -> None:
            self.cycle = cycle

        def _stop_head_timer(self) -> None:
            pass

        def _release_head(self) -> None:
            GuardedHttpToolsProtocol._release_head(self)  # type: ignore[arg-type]

    refused = errors.HeadersTooLarge("too large")
    GuardedHttpToolsProtocol._refuse(Protocol(), refused)  # type: ignore[arg-type]
    head, refusal = cycle.transport.written[:2]
    assert head.startswith(b"HTTP/1.1 200 OK") and b" 431 " in refusal.split(b"\r\n", 1)[0]


class Paused:
    write_paused = True

    async def drain(self) -> None:
        await asyncio.sleep(0)


def test_names_are_lowered_and_at_most_max_names_remembered() -> None:
    names = LoweredNames(re.compile(b"[ :]"))
    assert names[b"X-Conversation-ID"] == b"x-conversation-id"
    for n in range(MAX_NAMES + 10):
        assert names[b"x-name-%d" % n] == b"x-name-%d" % n
    assert len(names) == MAX_NAMES
    with pytest.raises(RuntimeError, match="Invalid HTTP header name"):
        names[b"x later"]
    assert names[b"X-Later"] == b"x-later" and len(names) == MAX_NAMES


def test_in_place_once_the_protocol_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    guarded_httptools(HeadLimits(max_bytes=8192, max_headers=100, timeout_s=5.0, keep_alive_s=5))
    assert httptools_impl.RequestResponseCycle is OnePassCycle
    assert not install()  # already in place: left as it is
    monkeypatch.setattr(httptools_impl, "RequestResponseCycle", UVICORN_CYCLE)
    monkeypatch.setattr(uvicorn_send, "_STATE", (*uvicorn_send._STATE, "a_field_uvicorn_never_had"))
    assert not install()  # a uvicorn whose cycle this was not written against keeps its own send
    assert httptools_impl.RequestResponseCycle is UVICORN_CYCLE
