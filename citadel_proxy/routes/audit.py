"""Management reads of the audit trail: conversations (filtered, keyset pages), one conversation, stats.

    GET /management/audit/conversations?model=&key=&since=&until=&limit=&cursor=&text=
    GET /management/audit/conversations/{id}
    GET /management/audit/stats?since=&until=        (default: the last 24 hours)

Admin only: list these among the management routes the auth guard protects.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from citadel_proxy.audit.conversations import normalise
from citadel_proxy.audit.ports import AuditReader
from citadel_proxy.audit.sink import AuditSink
from citadel_proxy.auth.guard import Endpoint
from citadel_proxy.errors import InvalidRequest, NotFound, ServiceUnavailable
from citadel_proxy.http.responses import json_response

_MAX_PAGE = 200
_MAX_MESSAGES = 10_000


def _queries(request: Request) -> AuditReader:
    sink: AuditSink | None = getattr(request.state.services, "audit", None)
    queries = sink.queries if sink is not None else None
    if queries is None:
        raise ServiceUnavailable("the audit trail cannot be read in this process")
    return queries


def _text(request: Request, name: str) -> str | None:
    """A query parameter as given, None when empty; NUL is refused here, as PostgreSQL cannot take it."""
    raw = request.query_params.get(name)
    if raw is not None and "\x00" in raw:
        raise InvalidRequest(f"{name} must not contain NUL characters", param=name)
    return raw or None


def _time(request: Request, name: str) -> datetime | None:
    raw = _text(request, name)
    if not raw:
        return None
    try:
        value = msgspec.convert(raw, datetime)
    except msgspec.ValidationError:
        message = f"{name} must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z"
        raise InvalidRequest(message, param=name) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_PAGE:
        raise InvalidRequest(f"limit must be an integer from 1 to {_MAX_PAGE}", param="limit")
    return int(raw)


async def list_conversations(request: Request) -> Response:
    page = await _queries(request).conversations(
        model=_text(request, "model"),
        key=_text(request, "key"),
        since=_time(request, "since"),
        until=_time(request, "until"),
        limit=_limit(request),
        cursor=_text(request, "cursor"),
        text=_text(request, "text"),
    )
    return json_response(page)


async def get_conversation(request: Request) -> Response:
    conversation_id = normalise(request.path_params["id"])
    if conversation_id is None:
        raise NotFound("no such conversation")
    detail = await _queries(request).conversation(conversation_id, limit=_MAX_MESSAGES)
    if detail is None:
        raise NotFound("no such conversation")
    return json_response(detail)


async def stats(request: Request) -> Response:
    until = _time(request, "until")
    since = _time(request, "since") or (until or datetime.now(UTC)) - timedelta(days=1)
    return json_response(await _queries(request).stats(since=since, until=until))


def routes(wrap: Callable[[Endpoint], Endpoint] = lambda endpoint: endpoint) -> list[Route]:
    """The audit routes; the app wraps each in its admin guard."""
    return [
        Route("/management/audit/conversations", wrap(list_conversations), methods=["GET"]),
        Route("/management/audit/conversations/{id}", wrap(get_conversation), methods=["GET"]),
        Route("/management/audit/stats", wrap(stats), methods=["GET"]),
    ]
