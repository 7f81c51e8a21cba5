"""JSON responses encoded with msgspec, and the one place an error becomes a response."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy import errors
from citadel_proxy.http.name_memo import NameMemo
from citadel_proxy.observability.logs import log_refusal
from citadel_proxy.observability.refusals import UNMATCHED_ROUTE

_encode = msgspec.json.Encoder().encode
# For figures that change from one second to the next: a proxy must not serve yesterday's.
NO_STORE = {"Cache-Control": "no-store"}
_log = logging.getLogger("citadel_proxy.errors")
# An error's body in a client protocol's own shape (Ollama's, Anthropic's); by default OpenAI's object.
ErrorRender = Callable[[errors.GatewayError], bytes]


class _SetByStarlette(Exception):
    """A header that sets content-type or content-length: Starlette's Response makes that answer."""


class _EncodedNames(NameMemo[str, bytes]):
    """Header names as they are sent, lowered and encoded once each: the gateway's answers carry a few
    names from a small set (the rate-limit headers, the conversation and request ids) many times."""

    __slots__ = ()

    def __missing__(self, name: str) -> bytes:
        encoded = name.lower().encode("latin-1")
        if encoded in (b"content-type", b"content-length"):
            raise _SetByStarlette(name)
        return self.keep(name, encoded)


_NAMES = _EncodedNames()


class _Encoded(Response):
    """A response whose body and raw headers are made already (`encoded_response`)."""

    def __init__(self, body: bytes, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = raw_headers


def encoded_response(
    body: bytes, media_type: bytes, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """What Starlette's Response(body, status, headers, media_type) sends, its headers made in one pass.

    Starlette renders the body again (type checks), lowers and encodes the headers, then makes a list of
    their names and looks through it twice, and formats the media type, on every answer. Headers that
    set content-type or content-length themselves (none of the gateway's do) go to Starlette's
    Response, which keeps them in place of its own.
    """
    try:
        raw = [(_NAMES[k], v.encode("latin-1")) for k, v in headers.items()] if headers else []
    except _SetByStarlette:
        return Response(body, status, headers, media_type.decode("latin-1"))
    if status >= 200 and status not in (204, 304):
        raw.append((b"content-length", b"%d" % len(body)))
    raw.append((b"content-type", media_type))
    return _Encoded(body, status, raw)


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return encoded_response(_encode(value), b"application/json", status, headers)


def error_response(error: errors.GatewayError, render: ErrorRender | None = None) -> Response:
    return Response(
        error.to_json() if render is None else render(error),
        status_code=error.status,
        headers=error.headers or None,
        media_type="application/json",
    )


def _record_refusal(request: Request, error: errors.GatewayError, label: str | None = None) -> None:
    """A request refused before its pipeline ran (none logged it): counted, logged, audited.

    `label` is the route as a metrics label; by default the matched route's template, else "unmatched".
    """
    state = request.scope.get("state", {})
    if state.get("access_logged"):
        return
    template = getattr(request.scope.get("route"), "path", None)
    path = template or request.url.path[:200]
    client = request.client.host if request.client else ""
    key_name = state.get("key_name") or getattr(error, "key_name", None)
    trace = state.get("trace")
    if trace is not None:  # monitoring.tracing: the refused request's span
        trace.refused(error.status, error.code, key_name)
    services = state.get("services")
    refusals = getattr(services, "refusals", None)
    model = state.get("model", "")[:200]  # the client's text, refused: kept short
    if refusals is None:  # a router run without the gateway's lifespan (a test's): the line alone
        log_refusal(
            state.get("request_id", ""), path, client, error.status, error.code,
            key=key_name, model=model, started=state.get("started"),
        )  # fmt: skip
        return
    if isinstance(error, errors.AuthenticationFailed):
        services.failed_auth.failed(client)
    refusals.refused(
        route=path,
        label=label or template or UNMATCHED_ROUTE,
        client=client,
        status=error.status,
        reason=error.code,
        key_name=key_name,
        request_id=state.get("request_id", ""),
        model=model,
        started=state.get("started"),
    )


def refusal(request: Request, error: errors.GatewayError, render: ErrorRender | None = None) -> Response:
    """An error answer on http.front's short way in, where no middleware adds the request id."""
    _record_refusal(request, error, label=request.scope["path"])  # a configured route: a bounded label
    response = error_response(error, render)
    response.headers["x-request-id"] = request.scope["state"]["request_id"]
    return response


async def on_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.GatewayError)
    _record_refusal(request, exc)
    return error_response(exc)


def shaped_error(request: Request, error: errors.GatewayError, render: ErrorRender) -> Response:
    """An error of a routed endpoint (Starlette adds the request id) in its protocol's shape."""
    _record_refusal(request, error)
    return error_response(error, render)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 answers, in OpenAI's error shape."""
    assert isinstance(exc, HTTPException)
    error: errors.GatewayError
    if exc.status_code == 404:
        error = errors.NotFound("no such route", code="not_found")
    elif exc.status_code == 405:
        error = errors.MethodNotAllowed("method not allowed on this route", headers=exc.headers)
    else:
        error = errors.InvalidRequest(str(exc.detail))
        error.status = exc.status_code
    _record_refusal(request, error)
    return error_response(error)


def logged_bug(exc: Exception) -> errors.GatewayError:
    """A bug of ours: the traceback goes to the log, never to the client (who gets this error)."""
    _log.error("unhandled error", exc_info=exc)
    return errors.internal_error()


async def on_unexpected(_request: Request, exc: Exception) -> Response:
    return error_response(logged_bug(exc))
