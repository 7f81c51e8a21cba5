"""Request ids: taken from `X-Request-ID` when well formed, minted otherwise, returned on every response.

A plain ASGI middleware (BaseHTTPMiddleware would add a task per request and buffer streams). The id is
in `scope["state"]["request_id"]`, so handlers read it as `request.state.request_id`.
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
# Client ids end up in logs and headers: a bounded alphabet keeps them from forging log lines or headers.
_VALID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def new_request_id() -> str:
    return os.urandom(12).hex()


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's id when it is acceptable, else a new one."""
    for name, value in headers:
        if name == HEADER:
            if _VALID.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new list: the response may reuse its own header list.
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
