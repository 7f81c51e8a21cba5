"""Limits on a request's head (request line and headers) that both servers enforce, and their answers.

They act before the ASGI app is called: a head too large or too slow never becomes a request. uvicorn
enforces none of them (httptools buffers any header, and a connection that never finishes its head is
never timed out); hypercorn bounds the buffered head but times it out only with the keep-alive timeout.
http.uvicorn_guard and http.hypercorn_guard add what each lacks.
"""

from __future__ import annotations

from http import HTTPStatus

import msgspec

from citadel_proxy import errors
from citadel_proxy.config.schema import Gateway

# After refusing a head, input is read and dropped this long before the socket is closed: closing with
# unread input makes the kernel send a reset, and the client would lose the answer (nginx's
# "lingering close").
LINGER_S = 2.0
# The request line's method, spaces and version, beyond the target; each header's ": " and CRLF.
REQUEST_LINE_OVERHEAD = 16
HEADER_LINE_OVERHEAD = 4


class HeadLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_bytes: int
    max_headers: int
    timeout_s: float
    keep_alive_s: int

    @classmethod
    def of(cls, gateway: Gateway) -> HeadLimits:
        return cls(
            max_bytes=gateway.max_header_bytes,
            max_headers=gateway.max_headers,
            timeout_s=gateway.header_timeout_s,
            keep_alive_s=gateway.keep_alive_timeout_s,
        )

    def too_large(self) -> errors.HeadersTooLarge:
        return errors.HeadersTooLarge(
            f"request headers exceed {self.max_bytes} bytes or {self.max_headers} lines "
            "(gateway.max_header_bytes, gateway.max_headers)"
        )

    def too_slow(self) -> errors.RequestTimeout:
        return errors.RequestTimeout(
            f"request headers did not arrive within {self.timeout_s:g} s (gateway.header_timeout_s)"
        )

    def exceeded(self, head_bytes: int, headers: int) -> bool:
        return head_bytes > self.max_bytes or headers > self.max_headers


def refusal(error: errors.GatewayError) -> bytes:
    """A whole HTTP/1.1 response carrying the error, that closes the connection."""
    body = error.to_json()
    head = (
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
