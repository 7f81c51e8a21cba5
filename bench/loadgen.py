"""A cheap HTTP/1.1 keep-alive load generator: raw asyncio protocols, run in a process of its own.

Each of N connections sends its request back to back and parses just enough of each answer (status
line, Content-Length or chunked framing) to find its end and the time of the first body bytes that
carry a token: the first chunk for NDJSON/JSON, the first `"content":"` for SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

# The request body may hold this marker; it is replaced by a number unique to each request.
SEQUENCE = b"@SEQ@"
# In the generator's process, when its LoadProcess counts them: answers begun (head read) and not ended,
# a shared integer the parent reads while a job runs (how many streams are open now).
_open_answers: Any = None


@dataclass(frozen=True)
class Job:
    """One bounded run: min(max_requests, max_seconds) of `concurrency` connections in a loop."""

    port: int
    path: str
    body: bytes
    concurrency: int
    max_requests: int
    max_seconds: float
    marker: bytes = b""  # b"" means any body bytes are the first token
    host: str = "127.0.0.1"
    one_per_connection: bool = False  # each connection sends one request (held-open streams)
    headers: bytes = b""  # extra header lines, each ending in CRLF (Authorization)
    tls_ca: str = ""  # a CA file: connect over TLS (HTTP/1.1), verifying the server against it
    count: bytes = b""  # when set, its occurrences in each answer's body are counted (tokens delivered)
    # When set, connections open at this rate, each sending as soon as it is connected (thousands of held
    # streams: a burst of connects would overflow the listen backlog and queue the requests behind it).
    ramp_per_s: float = 0.0
    grace_s: float = 15.0  # in-flight answers may finish this long after the deadline
    # When set, connection i of N sends its first request i/N of this later, and what was sent before it
    # is over is not counted (max_seconds runs from there): answers that all take as long (a timed fake)
    # would otherwise keep every connection sending at the same instant, a burst each round.
    stagger_s: float = 0.0


@dataclass
class Result:
    """Per-request times in seconds, in completion order, and what the run cost the generator."""

    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    reconnects: int = 0
    tokens: list[int] = field(default_factory=list)  # Job.count's occurrences per answer, with `total`
    ramp_s: float = 0.0  # with Job.ramp_per_s: from the start until the last connection had sent


def request_bytes(job: Job) -> bytes:
    head = (
        f"POST {job.path} HTTP/1.1\r\nHost: {job.host}:{job.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(job.body)}\r\n"
    )
    return head.encode() + job.headers + b"\r\n" + job.body


class Run:
    """Shared state of one run: counters, deadline and the times collected."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.template = request_bytes(job)
        self.unique = SEQUENCE in job.body
        self.result = Result()
        self.sent = 0
        self.seq = 0
        self.deadline = 0.0
        self.counted_from = 0.0  # answers to requests sent before this are not counted
        self.open = 0
        self.finished = asyncio.get_running_loop().create_future()

    def budget_left(self, first: bool) -> bool:
        if self.sent >= self.job.max_requests or time.perf_counter() >= self.deadline:
            return False
        return first or not self.job.one_per_connection

    def next_request(self, first: bool) -> bytes | None:
        """The next request to send, or None when the run's request or time budget is spent."""
        if not self.budget_left(first):
            return None
        self.sent += 1
        if not self.unique:
            return self.template
        self.seq += 1
        body = self.job.body.replace(SEQUENCE, b"%d-%d" % (time.time_ns(), self.seq))
        return request_bytes(Job(**{**self.job.__dict__, "body": body}))

    def reconnect(self) -> None:
        """Replace a connection the server is closing (hypercorn closes one after 1000 requests)."""
        self.open += 1
        self.result.reconnects += 1
        asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        connected = loop.create_future()
        client = Client(self, connected)
        try:
            await open_connection(lambda: client, self.job)
        except OSError:
            self.result.errors += 1
            self.closed()
            return
        client.send()

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.finished.done():
            self.finished.set_result(None)


class Client(asyncio.Protocol):
    """One keep-alive connection with a small response parser (head, Content-Length, chunked)."""

    def __init__(self, run: Run, connected: asyncio.Future[None]) -> None:
        self.run, self.connected = run, connected
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.state = "idle"
        self.remaining = 0
        self.status = 0
        self.start = self.first = 0.0
        self.closing = False
        self.counted = 0
        self.carry = b""  # the end of the last body bytes, where a counted marker may begin
        self.open = False  # its answer's head was read and its end was not (counted in _open_answers)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connected.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended()
        if self.state != "idle":
            self.run.result.errors += 1
        self.transport, self.state = None, "idle"
        self.run.closed()

    def send(self, first: bool = False) -> None:
        request = self.run.next_request(first)
        if request is None or self.transport is None:
            if self.transport is not None:
                self.transport.close()
            return
        self.state, self.first, self.counted, self.carry = "head", 0.0, 0, b""
        self.start = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        at = self.parse(now)
        del self.buffer[:at]

    def parse(self, now: float) -> int:
        # One small state machine reads best in one place.
        buf, at = self.buffer, 0
        while self.state != "idle":
            if self.state == "head":
                end = buf.find(b"\r\n\r\n", at)
                if end < 0:
                    return at
                self.head(bytes(buf[at:end]).lower())
                at = end + 4
                if self.state == "length" and self.remaining == 0:
                    self.done(now)
            elif self.state in ("length", "chunk"):
                take = min(self.remaining, len(buf) - at)
                if take == 0:
                    return at
                self.body(buf, at, at + take, now)
                at += take
                self.remaining -= take
                if self.remaining == 0:
                    if self.state == "length":
                        self.done(now)
                    else:
                        self.state = "size"
            else:  # "size" or "trailer"
                end = buf.find(b"\r\n", at)
                if end < 0:
                    return at
                line, at = buf[at:end], end + 2
                if self.state == "trailer":
                    if not line:
                        self.done(now)
                    continue
                size = int(bytes(line).split(b";")[0], 16)
                self.state, self.remaining = ("trailer", 0) if size == 0 else ("chunk", size + 2)
        return at

    def ended(self) -> None:
        if self.open:
            self.open = False
            _open_answers.value -= 1

    def head(self, head: bytes) -> None:
        if _open_answers is not None:
            self.open = True
            _open_answers.value += 1
        self.status = int(head[9:12])
        self.closing = b"\r\nconnection: close" in head
        if b"\r\ntransfer-encoding: chunked" in head:
            self.state = "size"
            return
        at = head.find(b"\r\ncontent-length:")
        stop = head.find(b"\r\n", at + 2)
        self.state = "length"
        self.remaining = int(head[at + 17 : stop if stop >= 0 else len(head)]) if at >= 0 else 0

    def body(self, buf: bytearray, start: int, stop: int, now: float) -> None:
        if count := self.run.job.count:
            piece = self.carry + bytes(buf[start:stop])
            self.counted += piece.count(count)
            self.carry = piece[len(piece) - len(count) + 1 :] if len(count) > 1 else b""
        if self.first:
            return
        marker = self.run.job.marker
        if not marker or buf.find(marker, start, stop) >= 0:
            self.first = now

    def done(self, now: float) -> None:
        self.ended()
        result = self.run.result
        result.statuses[self.status] = result.statuses.get(self.status, 0) + 1
        if self.status != 200:
            result.errors += 1
        elif self.start >= self.run.counted_from:
            result.ttft.append((self.first or now) - self.start)
            result.total.append(now - self.start)
            if self.run.job.count:
                result.tokens.append(self.counted)
        self.state = "idle"
        if not self.closing:
            self.send()
        elif self.transport is not None:
            self.transport.close()
            if self.run.budget_left(first=False):
                self.run.reconnect()


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A client context that trusts `ca_file` and offers HTTP/1.1 only, as most API clients do."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


_CONTEXTS: dict[str, ssl.SSLContext] = {}


async def open_connection(factory: Callable[[], asyncio.Protocol], job: Job) -> None:
    """A connection for `job`: plain TCP, or TLS when it names a CA file (one context per file, so
    nothing is loaded per connection)."""
    loop = asyncio.get_running_loop()
    if not job.tls_ca:
        await loop.create_connection(factory, job.host, job.port)
        return
    context = _CONTEXTS.get(job.tls_ca) or _CONTEXTS.setdefault(job.tls_ca, tls_context(job.tls_ca))
    await loop.create_connection(factory, job.host, job.port, ssl=context, server_hostname=job.host)


async def run_job(job: Job) -> Result:
    """Connect everything first (the clock starts after), then run until the budget is spent."""
    if job.ramp_per_s:
        return await _ramped(job)
    loop = asyncio.get_running_loop()
    run = Run(job)
    clients: list[Client] = []
    gate = asyncio.Semaphore(64)  # a burst of 500 connects would overflow the server's listen backlog

    async def connect() -> None:
        async with gate:
            connected = loop.create_future()
            client = Client(run, connected)
            await open_connection(lambda: client, job)
            await connected
            clients.append(client)

    await asyncio.gather(*(connect() for _ in range(job.concurrency)))
    run.open = len(clients)
    cpu = time.process_time()
    started = time.perf_counter()
    run.counted_from = started + job.stagger_s
    run.deadline = run.counted_from + job.max_seconds
    for i, client in enumerate(clients):
        if job.stagger_s and i:
            loop.call_later(job.stagger_s * i / len(clients), client.send, True)
        else:
            client.send(first=True)
    await _finish(run, clients, started, cpu)
    return run.result


async def _finish(run: Run, clients: list[Client], started: float, cpu: float) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(run.finished), run.job.max_seconds + run.job.grace_s)
    except TimeoutError:
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
        await run.finished
    run.result.elapsed_s = time.perf_counter() - started
    run.result.cpu_s = time.process_time() - cpu


async def _ramped(job: Job) -> Result:
    """Open `concurrency` connections at `ramp_per_s`, each sending its request once connected."""
    loop = asyncio.get_running_loop()
    run = Run(job)
    clients: list[Client] = []
    gate = asyncio.Semaphore(64)
    run.open = 1  # the ramp itself: the run cannot finish before every connection was opened
    cpu, started = time.process_time(), time.perf_counter()
    run.deadline = started + job.max_seconds

    async def open_one() -> None:
        async with gate:
            connected = loop.create_future()
            client = Client(run, connected)
            try:
                await open_connection(lambda: client, job)
            except OSError:
                run.result.errors += 1
                return
        clients.append(client)
        run.open += 1
        client.send(first=True)

    opening = []
    for i in range(job.concurrency):
        if (wait := started + i / job.ramp_per_s - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        opening.append(loop.create_task(open_one()))
    await asyncio.gather(*opening)
    run.result.ramp_s = time.perf_counter() - started
    run.closed()
    await _finish(run, clients, started, cpu)
    return run.result


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_jobs(conn: Connection, open_answers: Any = None) -> None:
    """The generator process: run each Job received, send back its Result; None ends it."""
    global _open_answers
    _open_answers = open_answers
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        while (job := conn.recv()) is not None:
            conn.send(runner.run(run_job(job)))


class LoadProcess:
    """The generator in its own process, so its CPU never mixes with what is measured."""

    def __init__(self, count_open: bool = False) -> None:
        """`count_open`: keep `open_answers` current (held streams), at a little CPU per answer."""
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        # One writer (the generator's loop), one reader: no lock needed for a machine word.
        self._open = context.Value("i", 0, lock=False) if count_open else None
        self.process = context.Process(
            target=serve_jobs, args=(child, self._open), daemon=True, name="bench-loadgen"
        )
        self.process.start()
        child.close()

    @property
    def open_answers(self) -> int:
        """Answers begun and not ended in the generator now (0 unless counted)."""
        return 0 if self._open is None else int(self._open.value)

    def submit(self, job: Job) -> None:
        self.conn.send(job)

    def poll(self, timeout_s: float) -> bool:
        return self.conn.poll(timeout_s)

    def result(self) -> Result:
        result = self.conn.recv()
        assert isinstance(result, Result)
        return result

    def run(self, job: Job) -> Result:
        self.submit(job)
        return self.result()

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
