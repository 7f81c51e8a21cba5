"""Reads for the management API: conversations (keyset pages), one conversation's messages, statistics."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from citadel_proxy.audit.store import unescape_nul
from citadel_proxy.errors import InvalidRequest, ServiceUnavailable


class ConversationSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    started_at: datetime
    last_at: datetime | None
    key_name: str | None
    model: str
    requests: int


class ConversationPage(msgspec.Struct, frozen=True, kw_only=True):
    data: list[ConversationSummary]
    # Pass as `cursor` to get the next page; null on the last one.
    next_cursor: str | None


class MessageOut(msgspec.Struct, frozen=True, kw_only=True):
    request_id: uuid.UUID
    position: int
    created_at: datetime
    role: str
    content: str | None
    content_sha256: str | None
    content_bytes: int
    truncated: bool
    model: str
    status: int


class ConversationDetail(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    started_at: datetime
    key_name: str | None
    model: str
    messages: list[MessageOut]


class ModelStats(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    p50_ms: float | None
    p95_ms: float | None
    p50_ttft_ms: float | None
    p95_ttft_ms: float | None


class StatsOut(msgspec.Struct, frozen=True, kw_only=True):
    since: datetime | None
    until: datetime | None
    data: list[ModelStats]


_LIST = """
SELECT c.id, c.started_at, c.key_name, c.model, s.last_at, s.requests
FROM conversations c
CROSS JOIN LATERAL (
    SELECT max(r.created_at) AS last_at, count(*) AS requests
    FROM audit_requests r WHERE r.conversation_id = c.id
) s
WHERE (%(key)s::text IS NULL OR c.key_name = %(key)s OR EXISTS (
        SELECT 1 FROM audit_requests r WHERE r.conversation_id = c.id AND r.key_name = %(key)s))
  AND (%(model)s::text IS NULL OR EXISTS (
        SELECT 1 FROM audit_requests r WHERE r.conversation_id = c.id
        AND (r.model = %(model)s OR r.model_requested = %(model)s)))
  AND (%(since)s::timestamptz IS NULL OR c.started_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR c.started_at < %(until)s)
  AND (%(text)s::text IS NULL OR EXISTS (
        SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content ILIKE %(text)s ESCAPE '\\'))
  AND (%(after_at)s::timestamptz IS NULL OR (c.started_at, c.id) < (%(after_at)s, %(after_id)s::text))
ORDER BY c.started_at DESC, c.id DESC
LIMIT %(limit)s
"""

_ONE = "SELECT id, started_at, key_name, model FROM conversations WHERE id = %s"

_MESSAGES = """
SELECT m.request_id, m.position, m.created_at, m.role, m.content, m.content_sha256, m.content_bytes,
       m.truncated, r.model, r.status, r.nul_escaped
FROM messages m JOIN audit_requests r ON r.id = m.request_id
WHERE m.conversation_id = %s
ORDER BY m.created_at, m.request_id, m.position
LIMIT %s
"""

_STATS = """
SELECT model, count(*) AS requests,
       count(*) FILTER (WHERE status >= 400 OR error_code IS NOT NULL) AS errors,
       coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms) AS p50_ttft_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS p95_ttft_ms
FROM audit_requests
WHERE (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
GROUP BY model
ORDER BY model
"""


def contains_pattern(text: str | None) -> str | None:
    """A LIKE pattern matching `text` anywhere, its own `%`, `_` and `\\` taken literally."""
    if not text:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def encode_cursor(started_at: datetime, conversation_id: str) -> str:
    raw = msgspec.json.encode([started_at, conversation_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=tuple[datetime, str])
    except (ValueError, msgspec.DecodeError) as exc:
        raise InvalidRequest("cursor is not one this API returned", param="cursor") from exc


class ConversationListing:
    """The conversations listing both stores answer alike; a store gives its query, its fetch and how
    its driver takes a time."""

    _list_query: str
    # PostgreSQL's rows carry typed values; SQLite's carry text that needs converting.
    _strict: bool = True

    async def _fetch(self, query: str, params: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _when(self, value: datetime | None) -> Any:
        return value

    async def conversations(
        self,
        *,
        model: str | None,
        key: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        cursor: str | None,
        text: str | None = None,
    ) -> ConversationPage:
        after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
        params = {
            "text": contains_pattern(text),
            "model": model,
            "key": key,
            "since": self._when(since),
            "until": self._when(until),
            "after_at": self._when(after_at),
            "after_id": after_id,
            "limit": limit + 1,
        }
        rows = await self._fetch(self._list_query, params)
        page = [msgspec.convert(row, ConversationSummary, strict=self._strict) for row in rows[:limit]]
        more = len(rows) > limit
        return ConversationPage(
            data=page, next_cursor=encode_cursor(page[-1].started_at, page[-1].id) if more else None
        )


class AuditQueries(ConversationListing):
    _list_query = _LIST

    """Read-only access to the audit tables through the shared pool."""

    def __init__(self, pool: AsyncConnectionPool, timeout_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    async def _fetch(self, query: str, params: Any) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(self._timeout_s), self._pool.connection(self._timeout_s) as conn:
                cursor = conn.cursor(row_factory=dict_row)
                await cursor.execute(query.encode(), params)
                return await cursor.fetchall()
        except (psycopg.Error, TimeoutError) as exc:
            raise ServiceUnavailable("the audit database is unavailable") from exc

    async def conversation(self, conversation_id: str, *, limit: int) -> ConversationDetail | None:
        head = await self._fetch(_ONE, (conversation_id,))
        if not head:
            return None
        rows = await self._fetch(_MESSAGES, (conversation_id, limit))
        messages = [
            msgspec.convert(unescape_nul(row) if row.pop("nul_escaped") else row, MessageOut) for row in rows
        ]
        return ConversationDetail(**head[0], messages=messages)

    async def stats(self, *, since: datetime | None, until: datetime | None) -> StatsOut:
        rows = await self._fetch(_STATS, {"since": since, "until": until})
        return StatsOut(since=since, until=until, data=[msgspec.convert(row, ModelStats) for row in rows])
