"""The gateway's ASGI entry point: what every request gets, and a short way in for the inference routes.

Every HTTP request gets its client address (taken from X-Forwarded-For only when a trusted proxy sent
it) and a request id, returned in `X-Request-ID`. The inference routes (chat, completions, agent streams:
POSTs, the hot path) then go straight to their endpoint; everything else goes through Starlette's router,
middleware and exception handlers.

Why a short way in: under an open stream Starlette's router, exception middleware, error middleware and
two ASGI middlewares kept about fifteen coroutine frames and closures (~4.5 KiB per held stream, a
fifth of the whole) and a wrapper around every event written. Here a held stream has this frame, its
endpoint's response and nothing in between; the endpoint puts the request id in its own headers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citadel_proxy import errors
from citadel_proxy.http.forwarded import TrustedProxies
from citadel_proxy.http.responses import logged_bug, refusal
from citadel_proxy.memory import trim_soon
from citadel_proxy.observability.request_id import HEADER, request_id_from

Endpoint = Callable[[Request], Awaitable[Response | ASGIApp]]


class Front:
    def __init__(
        self,
        app: ASGIApp,
        proxies: TrustedProxies,
        fast: Mapping[str, Endpoint],
        fast_pattern: Callable[[str], Endpoint | None] | None = None,
    ) -> None:
        self._app = app
        self._proxies = proxies
        self._fast = dict(fast)
        # Paths that exist while the pipelines say so (agent profiles come and go on reload).
        self._fast_pattern = fast_pattern

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)  # lifespan, websockets
            return
        self._proxies.apply(scope)
        request_id = request_id_from(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = time.perf_counter()  # a refusal's access line says how long it took
        endpoint = self._fast_endpoint(scope["path"]) if scope["method"] == "POST" else None
        if endpoint is None:
            await self._app(scope, receive, _with_request_id(send, request_id))
        else:
            # Served in this frame, not a helper's: a held stream keeps every frame on its path alive.
            response = await _respond(endpoint, Request(scope, receive))
            await response(scope, receive, send)
        if state.get("trim_after"):  # a large body was read (http.body): its memory is free by now
            trim_soon()

    def _fast_endpoint(self, path: str) -> Endpoint | None:
        endpoint = self._fast.get(path)
        if endpoint is None and self._fast_pattern is not None:
            return self._fast_pattern(path)
        return endpoint


async def _respond(endpoint: Endpoint, request: Request) -> Response | ASGIApp:
    """The endpoint's response, or the error answer it raised (the request is let go of once it returns)."""
    try:
        return await endpoint(request)
    except errors.GatewayError as error:
        return refusal(request, error)
    except Exception as exc:
        return refusal(request, logged_bug(exc))


def _with_request_id(send: Send, request_id: str) -> Send:
    header = (HEADER, request_id.encode("ascii"))

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            # A new list: the response may reuse its own header list.
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    return send_with_id
