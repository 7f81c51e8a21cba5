"""The management API's reads on the embedded SQLite store: the PostgreSQL queries' shapes and values."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from typing import Any

import msgspec

from citadel_proxy.audit.queries import (
    ConversationDetail,
    ConversationListing,
    ModelStats,
    StatsOut,
)
from citadel_proxy.audit.sqlite_file import SqliteFile
from citadel_proxy.audit.sqlite_store import utc_text
from citadel_proxy.errors import ServiceUnavailable

_LIST = """
SELECT c.id, c.started_at, c.key_name, c.model,
       (SELECT max(r.created_at) FROM audit_requests r WHERE r.conversation_id = c.id) AS last_at,
       (SELECT count(*) FROM audit_requests r WHERE r.conversation_id = c.id) AS requests
FROM conversations c
WHERE (:key IS NULL OR c.key_name = :key OR EXISTS (
        SELECT 1 FROM audit_requests r WHERE r.conversation_id = c.id AND r.key_name = :key))
  AND (:model IS NULL OR EXISTS (
        SELECT 1 FROM audit_requests r WHERE r.conversation_id = c.id
        AND (r.model = :model OR r.model_requested = :model)))
  AND (:since IS NULL OR c.started_at >= :since)
  AND (:until IS NULL OR c.started_at < :until)
  AND (:text IS NULL OR EXISTS (
        SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content LIKE :text ESCAPE '\\'))
  AND (:after_at IS NULL OR (c.started_at, c.id) < (:after_at, :after_id))
ORDER BY c.started_at DESC, c.id DESC
LIMIT :limit
"""

_ONE = "SELECT id, started_at, key_name, model FROM conversations WHERE id = ?"

_MESSAGES = """
SELECT m.request_id, m.position, m.created_at, m.role, m.content, m.content_sha256, m.content_bytes,
       m.truncated, r.model, r.status
FROM messages m JOIN audit_requests r ON r.id = m.request_id
WHERE m.conversation_id = ?
ORDER BY m.created_at, m.request_id, m.position
LIMIT ?
"""

_STATS = """
SELECT model, count(*) AS requests,
       count(*) FILTER (WHERE status >= 400 OR error_code IS NOT NULL) AS errors,
       coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens,
       percentile_cont(duration_ms, 0.5) AS p50_ms,
       percentile_cont(duration_ms, 0.95) AS p95_ms,
       percentile_cont(ttft_ms, 0.5) AS p50_ttft_ms,
       percentile_cont(ttft_ms, 0.95) AS p95_ttft_ms
FROM audit_requests
WHERE (:since IS NULL OR created_at >= :since)
  AND (:until IS NULL OR created_at < :until)
GROUP BY model
ORDER BY model
"""


def _text(value: datetime | None) -> str | None:
    return None if value is None else utc_text(value)


def _fetch(query: str, params: Any) -> Any:
    def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        cursor = conn.execute(query, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return run


class SqliteQueries(ConversationListing):
    """Read-only access to the audit tables on the reader's own connection."""

    _list_query = _LIST
    _strict = False

    def __init__(self, file: SqliteFile, timeout_s: float) -> None:
        self._file = file
        self._timeout_s = timeout_s

    async def _fetch(self, query: str, params: Any) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(self._timeout_s):
                rows: list[dict[str, Any]] = await self._file.run(_fetch(query, params))
                return rows
        except (sqlite3.Error, TimeoutError) as exc:
            raise ServiceUnavailable("the audit database is unavailable") from exc

    def _when(self, value: datetime | None) -> str | None:
        return _text(value)

    async def conversation(self, conversation_id: str, *, limit: int) -> ConversationDetail | None:
        head = await self._fetch(_ONE, (str(conversation_id),))
        if not head:
            return None
        rows = await self._fetch(_MESSAGES, (str(conversation_id), limit))
        return msgspec.convert(head[0] | {"messages": rows}, ConversationDetail, strict=False)

    async def stats(self, *, since: datetime | None, until: datetime | None) -> StatsOut:
        rows = await self._fetch(_STATS, {"since": _text(since), "until": _text(until)})
        data = [msgspec.convert(row, ModelStats, strict=False) for row in rows]
        return StatsOut(since=since, until=until, data=data)
