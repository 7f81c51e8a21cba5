"""A fake Ollama for benchmarks that costs almost no CPU: raw asyncio Protocol, HTTP/1.1 keep-alive.

    python -m bench.fake_ollama --port 11435 [--tokens 64] [--token-delay-ms 0] [--first-token-delay-ms 0]

Prints its URL on the first stdout line. Answers POST /api/chat and /api/generate (NDJSON over chunked
transfer encoding: N token lines + a done line with metrics; N is --tokens or the request's
options.num_predict; `"stream": false` gives one object), POST /api/embed, GET/HEAD /, GET /api/tags and
GET /api/version. Request bodies are only scanned (model, "stream": false, num_predict), never parsed,
except /api/embed's input list. Without a delay a whole stream leaves in one write (answers are cached
per second, so created_at stays current); with a delay, lines are paced with loop.call_later.

A model named `timed-<first>-<gap>` (e.g. `timed-50-10`, any tag) sets its own timing, whatever the
flags: the first line after <first> ms, the next ones <gap> ms apart; with `"stream": false` the whole
answer after <first> + <gap> x N ms. One timer per connection, no task: 10,000 such streams at once
cost the fake little more than their writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import resource
import signal
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import NamedTuple, cast

_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
_STREAM_FALSE = re.compile(rb'"stream"\s*:\s*false')
_NUM_PREDICT = re.compile(rb'"num_predict"\s*:\s*(-?\d+)')
_TIMED = re.compile(rb"timed-(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)")
_EMBED_DIM = 768
_JSON = b"application/json; charset=utf-8"
_CHAT_DONE = b'"done_reason":"stop","done":true,'
_GENERATE_DONE = b'"done":true,"done_reason":"stop",'


class Settings(NamedTuple):
    """What every answer looks like."""

    tokens: int = 64
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    # Models named paced* send one line per write, this far apart: tokens as a live model delivers them.
    paced_delay_s: float = 0.002


class Answers:
    """Encoded answers, rebuilt when the second changes (created_at and Date stay current)."""

    def __init__(self) -> None:
        self._second = -1
        self._lines: dict[tuple[bytes, bytes, int], list[bytes]] = {}
        self._bytes: dict[tuple[bytes, bytes, bytes, int], bytes] = {}
        self.date = b""
        self.created_at = b""

    def _refresh(self) -> None:
        now = time.time()
        if int(now) != self._second:
            self._second, self._lines, self._bytes = int(now), {}, {}
            self.date = formatdate(int(now), usegmt=True).encode()
            fraction = f"{int(now % 1 * 1e9):09d}".rstrip("0") or "0"
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(now)))
            self.created_at = f"{stamp}.{fraction}Z".encode()

    def lines(self, path: bytes, model: bytes, n: int) -> list[bytes]:
        """N token lines and the done line, each ending in a newline."""
        self._refresh()
        key = (path, model, n)
        if key not in self._lines:
            self._lines[key] = _stream_lines(path == b"/api/chat", model, n, self.created_at)
        return self._lines[key]

    def stream(self, path: bytes, model: bytes, n: int) -> bytes:
        """The whole streamed answer (headers, one chunk, the last chunk) for a single write."""
        self._refresh()
        key = (b"stream", path, model, n)
        if key not in self._bytes:
            body = b"".join(self.lines(path, model, n))
            self._bytes[key] = stream_head(self.date) + chunk(body) + b"0\r\n\r\n"
        return self._bytes[key]

    def complete(self, path: bytes, model: bytes, n: int) -> bytes:
        """The stream:false answer."""
        self._refresh()
        key = (b"complete", path, model, n)
        if key not in self._bytes:
            text = json.dumps("".join(f"w{i} " for i in range(n))).encode()
            if path == b"/api/chat":
                field, done = b'"message":{"role":"assistant","content":' + text + b"}", _CHAT_DONE
            else:
                field, done = b'"response":' + text, _GENERATE_DONE
            body = _object(model, self.created_at, field, done + _metrics(n))
            self._bytes[key] = response(200, _JSON, body, self.date)
        return self._bytes[key]

    def embed(self, model: bytes, count: int) -> bytes:
        """An /api/embed answer with `count` identical unit vectors."""
        self._refresh()
        key = (b"embed", b"", model, count)
        if key not in self._bytes:
            vector = b"[" + b",".join([repr(1 / math.sqrt(_EMBED_DIM)).encode()] * _EMBED_DIM) + b"]"
            body = (
                b'{"model":"' + model + b'","embeddings":[' + b",".join([vector] * count) + b"],"
                b'"total_duration":1000000,"load_duration":10000,"prompt_eval_count":%d}' % count
            )
            self._bytes[key] = response(200, _JSON, body, self.date)
        return self._bytes[key]

    def simple(self, status: int, content_type: bytes, body: bytes) -> bytes:
        self._refresh()
        return response(status, content_type, body, self.date)


def _metrics(n: int) -> bytes:
    return (
        b'"total_duration":%d,"load_duration":40000,"prompt_eval_count":26,"prompt_eval_duration":650000,'
        b'"eval_count":%d,"eval_duration":%d' % (650000 + 40000 + n * 10000 + 5000, n, n * 10000)
    )


def _object(model: bytes, created_at: bytes, field: bytes, rest: bytes) -> bytes:
    return b'{"model":"' + model + b'","created_at":"' + created_at + b'",' + field + b"," + rest + b"}"


def _stream_lines(chat: bool, model: bytes, n: int, created_at: bytes) -> list[bytes]:
    def field(text: bytes) -> bytes:
        if chat:
            return b'"message":{"role":"assistant","content":"' + text + b'"}'
        return b'"response":"' + text + b'"'

    lines = [_object(model, created_at, field(b"w%d " % i), b'"done":false') + b"\n" for i in range(n)]
    final = (_CHAT_DONE if chat else _GENERATE_DONE) + _metrics(n)
    lines.append(_object(model, created_at, field(b""), final) + b"\n")
    return lines


def stream_head(date: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nDate: "
        + date
        + (b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


def response(status: int, content_type: bytes, body: bytes, date: bytes) -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nDate: %s\r\nContent-Length: %d\r\n\r\n"
        % (status, _REASONS.get(status, b"Error"), content_type, date, len(body))
        + body
    )


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order (a paced stream holds later ones)."""

    def __init__(self, answers: Answers, settings: Settings) -> None:
        self.answers, self.settings = answers, settings
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            method, _, rest = head.partition(b"\r\n")[0].partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            close = b"\r\nconnection: close" in head
            self.handle(method.upper(), path, body)
            if close and self.transport is not None and not self.busy:
                self.transport.close()

    def handle(self, method: bytes, path: bytes, body: bytes) -> None:
        assert self.transport is not None
        a = self.answers
        if path in (b"/api/chat", b"/api/generate") and method == b"POST":
            self.generate(path, body)
        elif path == b"/api/embed" and method == b"POST":
            self.transport.write(self.embed(body))
        elif path == b"/" and method in (b"GET", b"HEAD"):
            answer = a.simple(200, b"text/plain; charset=utf-8", b"Ollama is running")
            self.transport.write(answer[: answer.index(b"\r\n\r\n") + 4] if method == b"HEAD" else answer)
        elif path == b"/api/version" and method == b"GET":
            self.transport.write(a.simple(200, _JSON, b'{"version":"0.0.0"}'))
        elif path == b"/api/tags" and method == b"GET":
            self.transport.write(a.simple(200, _JSON, b'{"models":[]}'))
        else:
            self.transport.write(a.simple(404, b"text/plain", b"404 page not found"))

    def embed(self, body: bytes) -> bytes:
        try:
            request = json.loads(body)
            value = request.get("input")
            count = len(value) if isinstance(value, list) else int(bool(value))
            model = json.dumps(str(request.get("model", "")))[1:-1].encode()
        except (ValueError, AttributeError):
            return self.answers.simple(400, _JSON, b'{"error":"invalid input"}')
        return self.answers.embed(model, count)

    def generate(self, path: bytes, body: bytes) -> None:
        assert self.transport is not None
        found = _MODEL.search(body)
        model = found.group(1) if found else b"fake"
        predict = _NUM_PREDICT.search(body)
        n = int(predict.group(1)) if predict and int(predict.group(1)) > 0 else self.settings.tokens
        stream = _STREAM_FALSE.search(body) is None
        first, delay = self.timing(model)
        if not delay and not first:
            self.transport.write(
                self.answers.stream(path, model, n) if stream else self.answers.complete(path, model, n)
            )
            return
        self.busy = True
        if not stream:
            self.later(first + delay * n, self.finish, self.answers.complete(path, model, n))
            return
        lines = self.answers.lines(path, model, n)
        if _TIMED.search(model) is None:
            self.later(first or delay, self.tick, lines, 0, delay, None)
            return
        # Timed models keep to their schedule: each line is due at a fixed time from the request, so the
        # timer's lateness (about a millisecond a line) does not add up over a stream.
        due = asyncio.get_running_loop().time() + (first or delay)
        self.timer = asyncio.get_running_loop().call_at(due, self.tick, lines, 0, delay, due)

    def timing(self, model: bytes) -> tuple[float, float]:
        """Seconds to the first line and between lines, for this model."""
        s = self.settings
        if timed := _TIMED.search(model):
            return float(timed.group(1)) / 1000, float(timed.group(2)) / 1000
        return s.first_token_delay_s, s.paced_delay_s if model.startswith(b"paced") else s.token_delay_s

    def later(self, delay: float, callback: Callable[..., None], *args: object) -> None:
        self.timer = asyncio.get_running_loop().call_later(delay, callback, *args)

    def tick(self, lines: list[bytes], index: int, delay: float, due: float | None) -> None:
        if self.transport is None:
            return
        out = chunk(lines[index])
        if index == 0:
            out = stream_head(self.answers.date) + out
        if index + 1 < len(lines):
            self.transport.write(out)
            if due is None:
                self.later(delay, self.tick, lines, index + 1, delay, None)
            else:
                self.timer = asyncio.get_running_loop().call_at(
                    due + delay, self.tick, lines, index + 1, delay, due + delay
                )
        else:
            self.finish(out + b"0\r\n\r\n")

    def finish(self, data: bytes) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.write(data)
        self.busy = False
        self.process()


async def serve(host: str, port: int, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; the URL goes to stdout first."""
    loop = asyncio.get_running_loop()
    answers = Answers()
    server = await loop.create_server(lambda: Connection(answers, settings), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_ollama", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11435, help="0 picks a free port (the URL is printed)")
    parser.add_argument("--tokens", type=int, default=64, help="token lines per answer (then one done line)")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="pause between lines")
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0, help="pause before the first line")
    args = parser.parse_args(argv)
    # One descriptor per connection: thousands of held streams need the soft file limit at the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    settings = Settings(args.tokens, args.token_delay_ms / 1000, args.first_token_delay_ms / 1000)
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.host, args.port, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
