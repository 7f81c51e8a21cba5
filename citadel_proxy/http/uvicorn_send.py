"""uvicorn's ASGI `send` (httptools), with a response's head written in one pass.

uvicorn's `RequestResponseCycle.send` takes a response's headers one at a time in Python: two regex runs
(name and value), the name lowered, three comparisons, four list items. An audited, rate-limited answer
carries a dozen headers or more, and each cost that loop again. Here a header name is checked and
lowered once per process (the names a worker sends are a few dozen constants: the gateway's,
Starlette's, the rate limits'), the values of one response are checked by one run of uvicorn's value
pattern over all of them joined by a tab (a character the pattern allows), and only the three names
uvicorn acts on (content-length, transfer-encoding, connection) are looked at further, with uvicorn's
own rules. A body is written as uvicorn writes it.

The head of an answer of known length is held back until its body comes, and the two go out in one
write: one system call and one segment for the client to read instead of two (Starlette sends a whole
answer's body right after its head). A head whose body does not come in the same turn of the event loop
goes out alone at the end of that turn. Whatever else writes to the connection first writes a held head
(`release`): the bytes leave in the order they were sent. A stream's head (chunked) is written at once,
as before: held, it saved one write of the four a 64-token voice stream takes, but copied the first
events (up to JOIN_AT_MOST) into the head's write, and back-to-back runs showed no gain beyond their
spread (README, Performance).

What uvicorn refuses is refused with the same error, before anything is written, leaving the state
uvicorn leaves.
Whatever this send does not take on itself goes to uvicorn's own: a transport that is paused or gone, an
access log to write, a message out of order, headers that are not pairs of bytes. This class takes the
place of uvicorn's only while uvicorn's sets up the state this send uses (`covers`), and
tests/core/test_uvicorn_send.py holds what it writes to what uvicorn writes for the same messages. The
names remembered are the process's, like the regex module's own cache: validated constants, at most
MAX_NAMES of them, whichever server sent them.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, NoReturn

from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from citadel_proxy.http.name_memo import MAX_NAMES, NameMemo

__all__ = ["JOIN_AT_MOST", "MAX_NAMES", "UVICORN_CYCLE", "LoweredNames", "OnePassCycle", "covers", "install"]
# A body up to this size is joined to its held head; past it, copying the body costs more than the write
# it saves.
JOIN_AT_MOST = 64 * 1024
_SPECIAL = frozenset((b"content-length", b"transfer-encoding", b"connection"))
# The attributes this send reads and sets: uvicorn's cycle as of 0.30 to 0.55.
_STATE = ("scope", "transport", "flow", "access_log", "default_headers", "message_event", "on_response",
          "disconnected", "keep_alive", "waiting_for_100_continue", "response_started",
          "response_complete", "chunked_encoding", "expected_content_length")  # fmt: skip


def _pattern(name: str) -> re.Pattern[bytes]:
    found = getattr(httptools_impl, name)
    # http.uvicorn_headers may have put its remembering check in place of the name pattern.
    return found if isinstance(found, re.Pattern) else found.pattern


class LoweredNames(NameMemo[bytes, bytes]):
    """Valid header names, each with its lowered form; looking up any other one checks it first."""

    __slots__ = ("_invalid",)

    def __init__(self, invalid: re.Pattern[bytes]) -> None:
        super().__init__()
        self._invalid = invalid

    def __missing__(self, name: bytes) -> bytes:
        if self._invalid.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        return self.keep(name, name.lower())


class OnePassCycle(RequestResponseCycle):
    """uvicorn's request/response cycle with `send` below."""

    names = LoweredNames(_pattern("HEADER_RE"))
    invalid_value = _pattern("HEADER_VALUE_RE")
    # The head of an answer of known length, written but not yet sent (never a chunked one's), and the
    # loop's call that sends it at the end of the turn.
    _held = b""
    _held_call: asyncio.Handle | None = None

    async def send(self, message: Any) -> None:
        if self.flow.write_paused or self.disconnected or self.access_log:
            self.release()
            await RequestResponseCycle.send(self, message)
        elif not self.response_started:
            if message["type"] != "http.response.start" or not self._start(message):
                await RequestResponseCycle.send(self, message)
        elif not self.response_complete and message["type"] == "http.response.body":
            self._body(message)
        else:
            self.release()
            await RequestResponseCycle.send(self, message)

    def release(self) -> None:
        """Write the held head now, if there is one."""
        if self._held:
            held = self._take_held()
            if not self.transport.is_closing():
                self.transport.write(held)

    def _take_held(self) -> bytes:
        held, self._held = self._held, b""
        self._held_call.cancel()  # type: ignore[union-attr]
        return held

    def _with_head(self, data: bytes) -> None:
        """Write the first of an answer's body after its held head: in the same write when small."""
        if len(data) > JOIN_AT_MOST:
            self.release()
            self.transport.write(data)
        else:
            self.transport.write(self._take_held() + data)

    def _start(self, message: Any) -> bool:
        """Write the head; False (nothing done) for headers this does not take on (uvicorn's send does)."""
        try:
            headers = message.get("headers", ())
            status_line = STATUS_LINE[message["status"]]
        except (KeyError, TypeError):
            return False
        if type(headers) is not list and type(headers) is not tuple:  # an iterator is read once: uvicorn's
            return False
        names = self.names
        parts = [status_line]
        values: list[bytes] = []
        special: list[tuple[bytes, bytes]] = []
        try:
            for pair in (self.default_headers, headers):
                for name, value in pair:
                    lowered = names[name]
                    if lowered in _SPECIAL:
                        special.append((lowered, value))
                    parts += (lowered, b": ", value, b"\r\n")
                    values.append(value)
        except RuntimeError:  # an invalid name
            self._refuse([*self.default_headers, *headers])
        except (TypeError, ValueError):  # not pairs of bytes (a bytearray name): uvicorn's send decides
            return False
        try:
            invalid = self.invalid_value.search(b"\t".join(values)) is not None
        except TypeError:  # a value that is not bytes-like
            invalid = True
        if invalid:
            self._refuse([*self.default_headers, *headers])
        self.response_started = True
        self.waiting_for_100_continue = False
        closing = bool(special) and self._special(special)
        if not self.keep_alive and not closing:
            parts.append(b"connection: close\r\n")
        status = message["status"]
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            self.chunked_encoding = True
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        self._write_head(b"".join(parts))
        return True

    def _write_head(self, head: bytes) -> None:
        """A chunked answer's head at once; an answer of known length's held for its body (`_with_head`)
        or, failing that, for the end of the loop's turn."""
        if self.chunked_encoding:
            self.transport.write(head)
        else:
            self._held = head
            self._held_call = asyncio.get_running_loop().call_soon(self.release)

    def _refuse(self, headers: list[tuple[bytes, bytes]]) -> NoReturn:
        """uvicorn's loop, one header at a time, for a head it refuses: the same error, and the state
        uvicorn leaves (the response started, the headers before the invalid one acted on)."""
        self.response_started = True
        self.waiting_for_100_continue = False
        for name, value in headers:
            lowered = self.names[name]  # RuntimeError for an invalid name
            if self.invalid_value.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            self._special([(lowered, value)])
        raise AssertionError("a refused head with every header valid")

    def _special(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """uvicorn's rules for the headers it acts on, in their order; True if one says connection: close."""
        closing = False
        for name, value in headers:
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
                self.keep_alive = False
                closing = True
        return closing

    def _body(self, message: Any) -> None:
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            self.release()
        elif self.chunked_encoding:
            content = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                content.append(b"0\r\n\r\n")
            # A chunked answer's head went out at once (`_start`): nothing is held here.
            self.transport.write(b"".join(content))
        else:
            size = len(body)
            if size > self.expected_content_length:
                self.release()
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= size
            if self._held:
                self._with_head(body)
            else:
                self.transport.write(body)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()


# uvicorn's own class, kept here whatever its module names once `install` ran.
UVICORN_CYCLE = RequestResponseCycle


def covers() -> bool:
    """Whether uvicorn's cycle sets up the state this send uses (read off its __init__'s code)."""
    assigned = set(RequestResponseCycle.__init__.__code__.co_names)
    return all(name in assigned for name in _STATE)


def install() -> bool:
    """Make uvicorn's httptools protocol start its cycles as OnePassCycle; False when uvicorn's cycle is
    not the one this was written against (or this is in place already), which leaves uvicorn as it is.

    In place of uvicorn's class, not swapped into each cycle it makes: an object whose class changes
    after its attributes are set loses the interpreter's fast attribute access, which cost more than
    this send saves (counted with `python -m bench.instructions`).
    """
    if httptools_impl.RequestResponseCycle is not RequestResponseCycle or not covers():
        return False
    httptools_impl.RequestResponseCycle = OnePassCycle  # type: ignore[misc]
    return True
