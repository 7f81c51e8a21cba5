"""Heads too large, too many headers and slow clients, without any key, against `citadel-proxy serve` as
shipped, with uvicorn and with hypercorn: 431 past the header limits, 408 and a closed connection past
the header timeout, idle keep-alive connections closed, and connections in use kept."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.core.conftest import REPO, free_port
from tests.deploy.harness import running, venv_script

HEADER_TIMEOUT_S = 1.0
# Above the head timeout, as the defaults are (10 s and 75 s): with the two equal, a stalled next head
# raced the idle keep-alive close (hypercorn's timer then closed first, with no answer).
KEEP_ALIVE_S = 3
# Far below the servers' own 75 s keep-alive, far above the 1 s configured: not a timing test.
CLOSED_WITHIN_S = 15.0
MAX_HEADER_BYTES = 64 * 1024  # the default
MAX_HEADERS = 100  # the default
REQUEST = b"GET /health HTTP/1.1\r\nHost: gateway\r\n"


@dataclass(frozen=True)
class Served:
    server: str
    port: int


def _config(tmp_path: Path, server: str, port: int) -> Path:
    path = tmp_path / "citadel.yaml"
    path.write_text(
        f"""
ollama: {{service: {{host: 127.0.0.1, port: {free_port()}, max_retries: 0}}}}
gateway:
  server: {server}
  port: {port}
  header_timeout_s: {HEADER_TIMEOUT_S}
  keep_alive_timeout_s: {KEEP_ALIVE_S}
paths: {{pipelines: {REPO / "pipelines"}, data: {tmp_path}/data, logs: {tmp_path}/log, backups: {tmp_path}/b}}
"""
    )
    return path


def _serve(tmp_path: Path, server: str, workers: int) -> Iterator[Served]:
    port = free_port()
    command = [venv_script("citadel-proxy"), "serve", "--config", str(_config(tmp_path, server, port))]
    command += ["--workers", str(workers)]
    with running(command, tmp_path / "gateway.log", f"gateway ({server})", port):
        yield Served(server, port)


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp(request.param), request.param, 1)


@pytest.fixture(params=["uvicorn", "hypercorn"])
def served_by_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, request.param, 2)


def connect(served: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=CLOSED_WITHIN_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes the connection (a socket timeout fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def answer(sock: socket.socket) -> tuple[int, dict[str, object] | None]:
    """The status and JSON body of a response after which the gateway closes the connection."""
    raw = read_until_closed(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, json.loads(body) if body.startswith(b"{") else None


def send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send `data` while the test reads: the gateway answers before it has all of it."""

    def send() -> None:
        # OSError: the gateway closed first; the test reads what it said.
        with contextlib.suppress(OSError):
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def refused_with(sock: socket.socket, data: bytes) -> tuple[int, dict[str, object] | None]:
    with sock:
        sender = send_in_background(sock, data)
        result = answer(sock)
        sender.join(CLOSED_WITHIN_S)
    return result


def assert_431(result: tuple[int, dict[str, object] | None]) -> None:
    status, body = result
    assert status == 431, result
    assert body is not None and body["error"]["code"] == "request_header_fields_too_large"  # type: ignore[index]


def test_an_8_mib_header_is_refused_with_431(served: Served) -> None:
    head = REQUEST + b"X-Big: " + b"a" * (8 << 20) + b"\r\n\r\n"
    assert_431(refused_with(connect(served), head))


def test_an_unfinished_head_past_the_limit_is_refused_before_it_ends(served: Served) -> None:
    # No blank line ever comes: the gateway must not wait for it, buffering.
    for _ in range(10):
        assert_431(refused_with(connect(served), REQUEST + b"X-Big: " + b"a" * (1 << 20)))


def test_a_complete_head_just_past_the_limit_is_refused(served: Served) -> None:
    # Sent at once, so the whole head may arrive in one read.
    assert_431(refused_with(connect(served), REQUEST + b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"))


def test_too_many_headers_are_refused_with_431(served: Served) -> None:
    for count in (MAX_HEADERS + 1, 20_000):
        lines = b"".join(b"X-%d: v\r\n" % i for i in range(count))
        assert_431(refused_with(connect(served), REQUEST + lines + b"\r\n"))


def test_heads_within_the_limits_are_served(served: Served) -> None:
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS - 2))
    big = b"X-Big: " + b"a" * (MAX_HEADER_BYTES - 2048) + b"\r\n"
    for head in (REQUEST + lines, REQUEST + big):
        with connect(served) as sock:
            sock.sendall(head + b"Connection: close\r\n\r\n")
            status, body = answer(sock)
        # /health itself: 503, since no Ollama runs behind this gateway.
        assert status == 503 and body is not None and body["status"] == "unavailable"


def test_slow_heads_are_answered_408_and_closed_within_the_header_timeout(served: Served) -> None:
    clients = [connect(served) for _ in range(20)]
    head = REQUEST + b"X-Slow: " + b"a" * 100
    started = time.monotonic()
    closed: dict[int, bytes] = {}
    sent = 0
    while len(closed) < len(clients) and time.monotonic() - started < CLOSED_WITHIN_S:
        for number, sock in enumerate(clients):
            if number not in closed:
                try:
                    sock.send(head[sent : sent + 1])
                except OSError:
                    closed[number] = b""
        sent += 1
        time.sleep(0.1)
        for number, sock in enumerate(clients):
            sock.setblocking(False)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            finally:
                sock.setblocking(True)
            closed[number] = closed.get(number, b"") + data
    for sock in clients:
        sock.close()
    # A byte every 0.1 s would keep every one of them open for as long as the head lasts.
    assert len(closed) == len(clients), f"{len(clients) - len(closed)} slow clients still connected"
    answered = [data for data in closed.values() if data]
    assert answered and all(data.startswith(b"HTTP/1.1 408 ") for data in answered)
    assert b'"code":"request_timeout"' in answered[0]


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    with connect(served) as sock:
        assert read_until_closed(sock) == b""


def test_an_idle_keep_alive_connection_is_closed(served: Served) -> None:
    with connect(served) as sock:
        sock.sendall(REQUEST + b"\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 503 ")
        # The rest of the response, then nothing until the gateway closes the idle connection.
        read_until_closed(sock)


def _one_answer(sock: socket.socket) -> int:
    """Read one whole answer (its head and Content-Length bytes) off a kept connection: its status."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the gateway closed a connection in use"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the gateway closed a connection in use"
        body += chunk
    return int(head.split(b" ", 2)[1])


def test_a_connection_in_use_is_kept_past_the_keep_alive_wait(served: Served) -> None:
    """The wait counts from the last answer, not the first: requests a third of the wait apart, for
    longer than the wait, all answered on one connection, which then closes once idle."""
    with connect(served) as sock:
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < KEEP_ALIVE_S + 1.5:
            sock.sendall(REQUEST + b"\r\n")
            statuses.append(_one_answer(sock))
            time.sleep(KEEP_ALIVE_S / 3)
        assert len(statuses) >= 5 and set(statuses) == {503}
        assert read_until_closed(sock) == b""


def test_with_several_workers_the_limits_hold(served_by_workers: Served) -> None:
    assert_431(refused_with(connect(served_by_workers), REQUEST + b"X-Big: " + b"a" * (1 << 20)))
    with connect(served_by_workers) as sock:
        sock.sendall(REQUEST[:10])
        status, body = answer(sock)
    assert status == 408 and body is not None


@pytest.mark.parametrize(
    "head",
    [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        REQUEST + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n",
    ],
)
def test_no_switch_to_http2_around_the_limits(served: Served, head: bytes) -> None:
    with connect(served) as sock:
        sock.sendall(head + (b"" if head.startswith(b"PRI") else b"Connection: close\r\n\r\n"))
        raw = read_until_closed(sock)
    # HTTP/1.1 either way: refused (prior knowledge), or answered as if no upgrade were offered (h2c).
    assert raw.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 503 ")), raw[:100]


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_keep_alive_requests_are_served_and_a_slow_next_head_is_timed_out(served: Served) -> None:
    with connect(served) as sock:
        for _ in range(3):
            sock.sendall(REQUEST + b"\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 503 ")
        # The next head starts, then stalls: timed from its first byte, not from the last response.
        sock.sendall(REQUEST[:5])
        status, body = answer(sock)
    assert status == 408 and body is not None and body["error"]["code"] == "request_timeout"  # type: ignore[index]
